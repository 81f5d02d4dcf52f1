"""The OpenAI-shaped bodies the server answers with: completions, stream chunks, usage, headers.

Every object of one reply repeats the same envelope (:class:`Reply`); a stream chunk, whether it
carries a delta or the final usage, is built by :func:`chunk` alone.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..generation import Completion, FitResult

TRIMMED_TOKENS_HEADER = "X-Contextwindow-Trimmed-Tokens"
TRIMMED_MESSAGES_HEADER = "X-Contextwindow-Trimmed-Messages"
PROMPT_TOKENS_HEADER = "X-Contextwindow-Prompt-Tokens"


@dataclass(frozen=True)
class Reply:
    """What every object of one reply repeats: its id, creation time and model."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, model: str) -> Reply:
        return cls(f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), model)

    def envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None}


def usage(fit: FitResult, completion: Completion) -> dict[str, Any]:
    """OpenAI's usage (``cached_tokens``: prompt tokens reused from the prefix cache), plus what
    the window policy left out and what the KV cache held."""
    return {
        "prompt_tokens": fit.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": fit.prompt_tokens + completion.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": completion.cached_tokens},
        "trimmed_tokens": fit.trimmed_tokens,
        "trimmed_messages": fit.trimmed_messages,
        "context_window": fit.budget + fit.reserve,
        "kv_cache_tokens": completion.kv_cache_tokens,
        "kv_evicted_tokens": completion.kv_evicted_tokens,
    }


def fit_headers(fit: FitResult) -> dict[str, str]:
    return {TRIMMED_TOKENS_HEADER: str(fit.trimmed_tokens),
            TRIMMED_MESSAGES_HEADER: str(fit.trimmed_messages),
            PROMPT_TOKENS_HEADER: str(fit.prompt_tokens)}


def completion_body(reply: Reply, fit: FitResult, completion: Completion) -> dict[str, Any]:
    """A whole ``chat.completion`` (non-streaming answer)."""
    return {
        **reply.envelope("chat.completion"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": completion.text, "refusal": None},
            "logprobs": None,
            "finish_reason": completion.finish_reason,
        }],
        "usage": usage(fit, completion),
    }


def chunk(reply: Reply, delta: dict[str, Any] | None = None, finish: str | None = None, *,
          usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk``: a ``delta`` (and the ``finish`` reason on the last one),
    or, with ``usage``, the usage chunk that follows them (it has no choices)."""
    if usage is not None:
        return {**reply.envelope("chat.completion.chunk"), "choices": [], "usage": usage}
    return {**reply.envelope("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta or {}, "logprobs": None,
                         "finish_reason": finish}]}


def sse(data: Any) -> str:
    """One server-sent event carrying ``data`` as compact JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"
