"""Token accounting: exact OpenAI figures from the cookbook, local chat templates, caching."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from examples import WEATHER_MESSAGES, WEATHER_TOOLS

from contextwindow.errors import ContextWindowError, UnknownModelError
from contextwindow.messages import Message
from contextwindow.tokens import TokenCounter, encoding_name_for_model

# The OpenAI cookbook's "How to count tokens with tiktoken" example and its API-verified totals.
CORPORATE_JARGON = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that "
                                  "translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user",
     "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant",
     "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user",
     "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
                "for increased leverage."},
    {"role": "system", "name": "example_assistant",
     "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for "
                                "the client deliverable."},
]


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4", 129), ("gpt-3.5-turbo", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)])
def test_cookbook_chat_example_is_exact(model: str, expected: int) -> None:
    assert TokenCounter.for_model(model).count_messages(CORPORATE_JARGON) == expected


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4", 105), ("gpt-3.5-turbo", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)])
def test_cookbook_tools_example_is_exact(model: str, expected: int) -> None:
    counter = TokenCounter.for_model(model)
    assert counter.count_messages(WEATHER_MESSAGES, tools=WEATHER_TOOLS) == expected


# An assistant tool call and its result, priced by hand from the framing docs/tokens.md documents
# (OpenAI publishes none for these; see "Exactness" there): each message costs 3 tokens + its
# role; each call 3 more + its name + its JSON arguments; a tool result adds its call id. The
# token figures are plain tiktoken lengths, the same in cl100k_base and o200k_base:
# "assistant" 1, "tool" 1, "get_current_weather" 3, ARGUMENTS 16, RESULT 13, "call_abc123" 4.
ARGUMENTS = '{"location": "San Francisco, CA", "unit": "celsius"}'
RESULT = '{"temperature": 18, "unit": "celsius"}'
WEATHER_CALL = {"role": "assistant", "content": None, "tool_calls": [{
    "id": "call_abc123", "type": "function",
    "function": {"name": "get_current_weather", "arguments": ARGUMENTS}}]}
WEATHER_RESULT = {"role": "tool", "tool_call_id": "call_abc123", "content": RESULT}
CALL_TOKENS = 3 + 1 + (3 + 3 + 16)  # 26
RESULT_TOKENS = 3 + 1 + 13 + 4  # 21


@pytest.mark.parametrize("model", ["gpt-4", "gpt-4o"])
def test_tool_call_and_tool_result_pricing_by_hand(model: str) -> None:
    counter = TokenCounter.for_model(model)
    assert counter.count_message(WEATHER_CALL) == CALL_TOKENS == 26
    assert counter.count_message(WEATHER_RESULT) == RESULT_TOKENS == 21
    two_calls = {**WEATHER_CALL, "tool_calls": [
        WEATHER_CALL["tool_calls"][0],
        {"id": "call_2", "type": "function",
         "function": {"name": "get_current_weather", "arguments": ARGUMENTS}}]}
    assert counter.count_message(two_calls) == 3 + 1 + 2 * (3 + 3 + 16)  # 48
    spoken = {**WEATHER_CALL, "content": "Checking."}  # "Checking." is 2 tokens in both
    assert counter.count_message(spoken) == CALL_TOKENS + 2


@pytest.mark.parametrize(("model", "tools_example"), [("gpt-4", 105), ("gpt-4o", 101)])
def test_a_whole_tool_round_trip_adds_exactly_the_call_and_the_result(
        model: str, tools_example: int) -> None:
    """The cookbook's API-verified tool request, continued with the call and its result."""
    counter = TokenCounter.for_model(model)
    request = [*WEATHER_MESSAGES, WEATHER_CALL, WEATHER_RESULT]
    assert counter.count_messages(request, tools=WEATHER_TOOLS) == (
        tools_example + CALL_TOKENS + RESULT_TOKENS)


def test_approximate_counter_prices_tool_calls_with_the_same_framing() -> None:
    counter = TokenCounter.approximate()
    # ceil(len/4): "assistant" 3, "get_current_weather" 5, ARGUMENTS (52 chars) 13
    assert counter.count_message(WEATHER_CALL) == 3 + 3 + (3 + 5 + 13)
    # "tool" 1, RESULT (38 chars) 10, "call_abc123" 3
    assert counter.count_message(WEATHER_RESULT) == 3 + 1 + 10 + 3


@pytest.mark.parametrize(("model", "encoding"), [
    ("gpt-4o", "o200k_base"), ("gpt-4o-2024-08-06", "o200k_base"),
    ("gpt-4.1-mini", "o200k_base"),
    ("gpt-5", "o200k_base"), ("o3-mini", "o200k_base"), ("o1", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"),
    ("gpt-3.5-turbo-0125", "cl100k_base")])
def test_model_to_encoding(model: str, encoding: str) -> None:
    assert encoding_name_for_model(model) == encoding


def test_unknown_model_and_encoding_are_clear_errors() -> None:
    with pytest.raises(UnknownModelError,
                       match="no tiktoken encoding is known for model 'llama-3'"):
        TokenCounter.for_model("llama-3")
    with pytest.raises(ContextWindowError, match="unknown tiktoken encoding"):
        TokenCounter.for_encoding("nope_base")


def test_each_message_is_priced_once() -> None:
    calls: list[str] = []

    def price(message: Message) -> int:
        calls.append(message.content or "")
        return 10

    counter = TokenCounter("test", len, price, reply_priming=3)
    history = [Message(role="user", content=f"m{i}") for i in range(50)]
    assert counter.count_messages(history) == 503
    assert counter.count_messages(history) == 503
    # an equal message with another id is the same content: still one pricing
    assert counter.count_message(Message(role="user", content="m7")) == 10
    assert len(calls) == 50


def test_approximate_counter() -> None:
    counter = TokenCounter.approximate()
    assert not counter.exact
    assert counter.count_text("") == 0
    assert counter.count_text("abcd") == 1
    assert counter.count_text("abcde") == 2
    # 3 framing + ceil(4/4) for "user" + ceil(5/4) for the content, + 3 reply priming
    assert counter.count_messages([{"role": "user", "content": "hello"}]) == 3 + 1 + 2 + 3


def test_offline_loading_uses_bundled_encodings(tmp_path) -> None:
    """With no network and an empty cache, tiktoken still loads o200k_base (seeded and
    hash-checked)."""
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path),
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    code = ("from contextwindow.tokens import TokenCounter;"
            "print(TokenCounter.for_model('gpt-4').count_text('tiktoken is great!'),"
            f"      TokenCounter.for_model('gpt-4o').count_messages({CORPORATE_JARGON!r}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    # the cookbook: "tiktoken is great!" is 6 cl100k_base tokens; 124 as above for gpt-4o
    assert out.stdout.split() == ["6", "124"]
    assert len(list(tmp_path.iterdir())) == 2  # both encodings were seeded into the empty cache


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from contextwindow.models import resolve

    return AutoTokenizer.from_pretrained(resolve())


def _template_len(tokenizer, messages) -> int:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


@pytest.mark.slow
@pytest.mark.parametrize("with_system", [True, False])
def test_hf_counter_equals_chat_template(smollm2_tokenizer, with_system: bool) -> None:
    from contextwindow.samples import sample_conversation

    counter = TokenCounter.from_hf(smollm2_tokenizer)
    conversation = [m.to_openai() for m in sample_conversation(6, tool_every=0)]
    conversation.append({"role": "user", "content": "Ünïcode, emoji 🎉 and\nnew lines."})
    if not with_system:
        conversation = conversation[1:]  # the template then injects its default system prompt
    for end in range(1, len(conversation) + 1):
        assert counter.count_messages(conversation[:end]) == _template_len(
            smollm2_tokenizer, conversation[:end])


# Qwen2.5's template in short: tool definitions inside the system turn (a default one when
# there is none), consecutive tool results in one user turn.
_JOINING_TEMPLATE = (
    "{%- set default = 'You are a default assistant.' %}"
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content }}"
    "{%- else %}{{- default }}{%- endif %}{{- '\\n\\n# Tools\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\n' + default + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif not (loop.first and message.role == 'system') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


@pytest.mark.slow
@pytest.mark.parametrize("system", [None, "Be brief.", "Be brief. ", "Be brief\n", ""])
@pytest.mark.parametrize("tools", [None, WEATHER_TOOLS])
def test_hf_counter_prices_what_a_template_renders_together(
        smollm2_tokenizer, system: str | None, tools: list | None) -> None:
    """A run of tool results shares one turn's framing, and the tools' price depends on
    where the system message's text ends (a trailing space or newline merges with the
    template's "\\n\\n"): both are measured from the template, so the count stays exact."""
    import copy

    from contextwindow.templates import chat_template_ids

    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.chat_template = _JOINING_TEMPLATE
    counter = TokenCounter.from_hf(tokenizer)
    calls = [{"id": f"c{k}", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
             for k in range(3)]
    conversation = [*([{"role": "system", "content": system}] if system is not None else []),
                    {"role": "user", "content": "Weather in Paris, 3 times?"},
                    {"role": "assistant", "content": "", "tool_calls": calls},
                    *({"role": "tool", "tool_call_id": f"c{k}", "content": f"{20 + k} C"}
                      for k in range(3)),
                    {"role": "assistant", "content": "20, 21 and 22 C."},
                    {"role": "user", "content": "Thanks."}]
    for end in range(1, len(conversation) + 1):
        head = conversation[:end]
        assert counter.count_messages(head, tools) == len(
            chat_template_ids(tokenizer, head, tools=tools)), end
    messages = [Message(**m) if "tool_calls" not in m else Message(role="assistant", content="")
                for m in conversation]
    assert counter.join_tokens(messages) < 0  # two results after the first share its turn
    assert counter.join_tokens(messages[:-4]) == 0
