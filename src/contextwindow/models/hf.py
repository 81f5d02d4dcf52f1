"""The transformers plumbing every model-side module shares, written once.

* :func:`encode_prefix` -- the first tokens of a long text without tokenizing all of it;
* :func:`forward` -- one forward on top of a KV cache, under the keyword this transformers
  version expects (``cache``, formerly ``past_key_values``), looked up once per model class.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

from ..errors import ConfigError

__all__ = ["cache_keyword", "encode_prefix", "forward"]

CHARS_PER_TOKEN = 8
"""A generous first guess (English prose is ~4-5 characters per token); doubled until enough."""


def encode_prefix(tokenizer: Any, text: str, n_tokens: int, *,
                  add_special_tokens: bool = False) -> list[int]:
    """The first ``n_tokens`` ids of ``text`` (all of them if it is shorter), tokenizing only
    a prefix of it.

    The prefix is doubled until it yields more than ``n_tokens`` ids (one spare id, so that
    the last id kept is not a word cut at the prefix boundary) or is the whole text.
    """
    if n_tokens < 1:
        raise ConfigError(f"n_tokens must be positive, got {n_tokens}")
    chars = n_tokens * CHARS_PER_TOKEN
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=add_special_tokens)["input_ids"]
        if len(ids) > n_tokens or chars >= len(text):
            break
        chars *= 2
    return [int(i) for i in ids[:n_tokens]]


@cache
def _cache_keyword(model_type: type[Any]) -> str:
    parameters = inspect.signature(model_type.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_keyword(model: Any) -> str:
    """``"cache"`` where ``model.forward`` takes it (transformers >= the rename), else
    ``"past_key_values"``; computed once per model class."""
    # A class is hashable; mypy checks type[Any] against Hashable's __hash__ and says it is not.
    return _cache_keyword(type(model))  # type: ignore[arg-type]


def forward(model: Any, input_ids: Any, cache: Any, **kwargs: Any) -> Any:
    """``model(input_ids=..., use_cache=True, <cache keyword>=cache, **kwargs)``."""
    kwargs.setdefault("use_cache", True)
    return model(input_ids=input_ids, **{cache_keyword(model): cache}, **kwargs)
