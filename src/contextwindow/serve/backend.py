"""The small interface the routes call, so a local engine and an upstream server are alike.

A :class:`Backend` parses a request body, answers it (:meth:`Backend.answer` returns an
:class:`Answer`: a whole ``chat.completion`` or a stream of server-sent events) and describes
its model. Whatever the backend, the reply is also collected in a :class:`ReplyTap` as it
completes, so server-side sessions can store it once (and only if) it finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..messages import Message, ToolCall
from .request import ApiError, ChatRequest

T = TypeVar("T")
Disconnected = Callable[[], Awaitable[bool]]
"""Whether the client went away (Starlette's ``request.is_disconnected``)."""


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
