"""The shared transformers plumbing (contextwindow.models.hf) on the SmolLM2 tokenizer and the
tiny Llama: exact ids, exact prefixes, the right cache keyword."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import corpus_text, make_tiny_llama

from contextwindow.errors import InvalidMessageError
from contextwindow.models import hf
from contextwindow.templates import chat_template_ids

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another one, with an accent: café."},
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from contextwindow.models import resolve

    return AutoTokenizer.from_pretrained(resolve())


def _reference_ids(tokenizer: Any, messages: list[dict[str, str]], prime: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=prime)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_the_chat_template_helper_has_one_home() -> None:
    """The model side imports it from the torch-free templates module, as the text side does."""
    assert chat_template_ids.__module__ == "contextwindow.templates"
    assert not hasattr(hf, "chat_template_ids")


@pytest.mark.parametrize("prime", [True, False])
def test_chat_template_ids_equal_apply_chat_template(tokenizer: Any, prime: bool) -> None:
    ids = chat_template_ids(tokenizer, CONVERSATION, add_generation_prompt=prime)
    assert type(ids) is list and all(type(i) is int for i in ids)
    assert ids == _reference_ids(tokenizer, CONVERSATION, prime)
    unprimed = _reference_ids(tokenizer, CONVERSATION, False)
    primed = chat_template_ids(tokenizer, CONVERSATION)
    assert primed[: len(unprimed)] == unprimed
    assert tokenizer.decode(primed[len(unprimed):]) == "<|im_start|>assistant\n"


class _ListTemplate:
    """A tokenizer stub answering like transformers 4 (a list) or 5 (a dict)."""

    def __init__(self, as_dict: bool) -> None:
        self.as_dict = as_dict
        self.calls: list[dict[str, Any]] = []

    def apply_chat_template(self, messages: list[Any], **options: Any) -> Any:
        self.calls.append(options)
        ids = [len(messages), 7, 8]
        return {"input_ids": ids, "attention_mask": [1, 1, 1]} if self.as_dict else ids


@pytest.mark.parametrize("as_dict", [True, False])
def test_chat_template_ids_accepts_both_return_shapes(as_dict: bool) -> None:
    stub = _ListTemplate(as_dict)
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert chat_template_ids(stub, CONVERSATION[:2], tools=tools) == [2, 7, 8]
    assert stub.calls == [{"tokenize": True, "add_generation_prompt": True, "tools": tools}]


def test_chat_template_ids_wraps_template_errors() -> None:
    class Refusing:
        def apply_chat_template(self, messages: Any, **options: Any) -> Any:
            raise ValueError("roles must alternate")

    with pytest.raises(InvalidMessageError, match="rejected the messages: roles must alternate"):
        chat_template_ids(Refusing(), CONVERSATION)


@pytest.mark.parametrize("n", [1, 37, 1000, 4096])
@pytest.mark.parametrize("special", [False, True])
def test_encode_prefix_equals_the_full_encode(tokenizer: Any, n: int, special: bool) -> None:
    text = corpus_text()[:200_000]
    full = tokenizer(text, add_special_tokens=special)["input_ids"]
    assert hf.encode_prefix(tokenizer, text, n, add_special_tokens=special) == list(full[:n])


def test_encode_prefix_tokenizes_only_a_prefix(tokenizer: Any) -> None:
    seen: list[int] = []

    def counting(text: str, **options: Any) -> Any:
        seen.append(len(text))
        return tokenizer(text, **options)

    text = corpus_text()
    ids = hf.encode_prefix(counting, text, 100)
    assert len(ids) == 100
    assert seen == [100 * hf.CHARS_PER_TOKEN]  # prose needs no second, longer try


def test_encode_prefix_of_a_short_text_is_all_of_it(tokenizer: Any) -> None:
    assert hf.encode_prefix(tokenizer, "Emma Woodhouse", 500) == \
        tokenizer("Emma Woodhouse", add_special_tokens=False)["input_ids"]


def test_forward_uses_the_cache_keyword_this_model_takes() -> None:
    import inspect

    import torch
    from transformers import DynamicCache

    model = make_tiny_llama()
    expected = "cache" if "cache" in inspect.signature(model.forward).parameters \
        else "past_key_values"
    assert hf.cache_keyword(model) == expected
    ids = torch.tensor([[1, 5, 9, 3, 4]])
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        head = hf.forward(model, ids[:, :3], cache)
        tail = hf.forward(model, ids[:, 3:], cache)
        dense = model(input_ids=ids, use_cache=False).logits
    assert cache.get_seq_length() == 5  # the cache was used, not ignored
    torch.testing.assert_close(torch.cat([head.logits, tail.logits], dim=1), dense,
                               rtol=1e-4, atol=1e-4)


def test_cache_keyword_is_looked_up_once_per_class() -> None:
    calls: list[str] = []

    class Old:
        def forward(self, input_ids: Any, past_key_values: Any = None, **kw: Any) -> Any:
            return None

        def __call__(self, **kwargs: Any) -> Any:
            calls.append(",".join(sorted(kwargs)))
            return kwargs

    class New(Old):
        def forward(self, input_ids: Any, cache: Any = None, **kw: Any) -> Any:
            return None

    assert hf.cache_keyword(Old()) == "past_key_values"
    assert hf.cache_keyword(New()) == "cache"
    hf.forward(Old(), [1], "C", logits_to_keep=1)
    hf.forward(New(), [1], "C")
    assert calls == ["input_ids,logits_to_keep,past_key_values,use_cache",
                     "cache,input_ids,use_cache"]
    before = hf._cache_keyword.cache_info().hits
    hf.cache_keyword(Old())
    assert hf._cache_keyword.cache_info().hits == before + 1
