"""What every part of the server shares: the request, the answer, errors, headers and SSE.

One request travels as these types: the route parses its body into a :class:`ChatRequest`
(:mod:`.request`), a :class:`Backend` (the local engine, :mod:`.local`, or the gateway's
upstream, :mod:`.upstream`) fits and answers it with an :class:`Answer` (a whole completion or
a stream of server-sent events, :func:`sse`) whose reply is collected in a :class:`ReplyTap` as
it completes, so a server-side session (:mod:`.sessions`) stores it once (and only if) it
finished. Anything the client should see goes out as an OpenAI-shaped :class:`ApiError`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..messages import Message, ToolCall
from ..sampling import SamplingParams
from ..tokens import TokenCounter
from ..window import LeftOut

__all__ = ["PROMPT_TOKENS_HEADER", "SSE_DONE", "TRIMMED_MESSAGES_HEADER", "TRIMMED_TOKENS_HEADER",
           "Answer", "ApiError", "Backend", "ChatRequest", "Disconnected", "ReplyTap",
           "fit_headers", "sse", "until_disconnected"]

T = TypeVar("T")
Disconnected = Callable[[], Awaitable[bool]]
"""Whether the client went away (Starlette's ``request.is_disconnected``)."""

TRIMMED_TOKENS_HEADER = "X-Contextwindow-Trimmed-Tokens"
TRIMMED_MESSAGES_HEADER = "X-Contextwindow-Trimmed-Messages"
PROMPT_TOKENS_HEADER = "X-Contextwindow-Prompt-Tokens"
SSE_DONE = "data: [DONE]\n\n"


class ApiError(Exception):
    """An error answered to the client as OpenAI-style JSON."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})  # e.g. an upstream's Retry-After

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    """A validated ``POST /v1/chat/completions`` body."""

    model: str
    messages: list[Message]
    params: SamplingParams
    stream: bool = False
    include_usage: bool = False
    #: The other fields of the body, forwarded as given (upstream mode only).
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: ``(n, tokens)``: the first n messages (a stored session's history) cost that many tokens.
    counted: tuple[int, int] = (0, 0)
    #: Ranks a stored session's older messages for the ``recall`` mode (its store's index).
    rank: Callable[[Message, int, int], Sequence[int]] | None = None


@dataclass
class ReplyTap:
    """The assistant's reply as it arrives: text, tool calls (by index) and finish reason."""

    text: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish: str | None = None
    failed: bool = False

    @property
    def complete(self) -> bool:
        """It finished (a finish reason came, not a cancellation or an error)."""
        return self.finish not in (None, "cancelled") and not self.failed

    def feed_message(self, message: Mapping[str, Any], finish: str | None) -> None:
        """A whole reply (``choices[0].message`` of a ``chat.completion``)."""
        self.feed_delta(message)
        self.finish = finish

    def feed_chunk(self, chunk: Mapping[str, Any]) -> None:
        """One ``chat.completion.chunk`` (only choice 0 is kept: sessions store one reply)."""
        for choice in chunk.get("choices") or ():
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                self.feed_delta(choice.get("delta") or {})
                self.finish = choice.get("finish_reason") or self.finish

    def feed_delta(self, delta: Mapping[str, Any]) -> None:
        if isinstance(delta.get("content"), str):
            self.text.append(delta["content"])
        for position, call in enumerate(delta.get("tool_calls") or ()):
            if not isinstance(call, Mapping):
                continue
            slot = self.tool_calls.setdefault(call.get("index", position),
                                              {"id": "", "name": "", "arguments": ""})
            function = call.get("function") or {}
            for key, value in (("id", call.get("id")), ("name", function.get("name")),
                               ("arguments", function.get("arguments"))):
                if isinstance(value, str):
                    slot[key] += value

    def message(self, message_id: str) -> Message:
        calls = tuple(ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"])
                      for _, c in sorted(self.tool_calls.items()))
        content = "".join(self.text)
        return Message(role="assistant", content=content if content or not calls else None,
                       tool_calls=calls, id=message_id)


@dataclass
class Answer:
    """A reply: ``body`` (a whole completion) or ``events`` (SSE text, without the final
    ``data: [DONE]``, which the route sends), the headers, and the reply's :class:`ReplyTap`.
    ``close`` frees what a stream holds (its upstream connection, its generation) even if the
    events are never read."""

    headers: dict[str, str]
    tap: ReplyTap
    body: dict[str, Any] | None = None
    events: AsyncIterator[str] | None = None
    close: Callable[[], Awaitable[Any]] | None = None


class Backend(Protocol):
    """What answers ``/v1/chat/completions``: the local engine or an upstream server."""

    model_id: str
    window: int  # tokens of the model's context window (for the cheap size bound)

    @property
    def counter(self) -> TokenCounter | None:
        """What prices a message the way the fit does, so a session's stored history is counted
        once, not on every turn; None when the backend counts in its own way (the local
        engine's chat template). Read-only here, so a backend may narrow it to a counter."""

    def parse(self, payload: Any) -> ChatRequest:
        """A decoded JSON body checked into a request (ApiError 400/404)."""

    async def answer(self, chat: ChatRequest, disconnected: Disconnected) -> Answer:
        """Fit and answer; ApiError for anything the client should see."""

    async def models(self) -> dict[str, Any]:
        """The ``GET /v1/models`` list."""

    def card(self) -> dict[str, Any]:
        """The model's ``GET /v1/models/{id}`` entry."""

    async def health(self) -> dict[str, Any]:
        """``GET /health``."""

    async def aclose(self) -> None:
        """Release threads and connections."""


def sse(data: Any) -> str:
    """One server-sent event carrying ``data`` as compact JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def fit_headers(fit: LeftOut) -> dict[str, str]:
    """What the fit left out and what the prompt costs, as the ``X-Contextwindow-*`` headers."""
    return {TRIMMED_TOKENS_HEADER: str(fit.trimmed_tokens),
            TRIMMED_MESSAGES_HEADER: str(fit.trimmed_messages),
            PROMPT_TOKENS_HEADER: str(fit.prompt_tokens)}


async def until_disconnected(work: Coroutine[Any, Any, T], disconnected: Disconnected,
                             poll: float = 0.5) -> T:
    """Await ``work``, cancelling it (and answering 499) if the client goes away meanwhile."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll)
            if done:
                return task.result()
            if await disconnected():
                raise ApiError(499, "client disconnected", type="server_error")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
