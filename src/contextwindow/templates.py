"""Chat template -> token ids, the one place that knows both shapes transformers returns.

Text side: it only calls ``tokenizer.apply_chat_template`` (no torch or transformers import), so
:mod:`contextwindow.tokens` can use it; model-side code gets it through
:mod:`contextwindow.models.hf`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InvalidMessageError


def chat_template_ids(tokenizer: Any, messages: Sequence[Mapping[str, Any]], *,
                      add_generation_prompt: bool = True, tools: Any = None) -> list[int]:
    """The token ids of ``messages`` (OpenAI-style dicts) rendered by the tokenizer's template.

    transformers 4 returns a list of ids, transformers 5 a ``BatchEncoding``; both become a plain
    list. A template that refuses the messages (jinja raises for roles or orders it does not
    support) raises :class:`InvalidMessageError`.
    """
    options: dict[str, Any] = {"tokenize": True, "add_generation_prompt": add_generation_prompt}
    if tools is not None:
        options["tools"] = tools
    try:
        ids = tokenizer.apply_chat_template(list(messages), **options)
    except Exception as exc:  # jinja errors are not one exception type
        raise InvalidMessageError(f"the chat template rejected the messages: {exc}") from exc
    if isinstance(ids, Mapping) or hasattr(ids, "keys"):  # transformers 5: a BatchEncoding
        ids = ids["input_ids"]
    return [int(i) for i in ids]
