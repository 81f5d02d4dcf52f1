"""The local backend: the generation worker on this machine's model.

Requests go to :class:`~.worker.GenerationWorker` (one at a time, FIFO). The worker reports the
fit first (so the trimming headers go out before the first token), then text pieces when
streaming, then the completion; a client that leaves cancels its generation at the next token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from ..generation import FitResult, Generator
from .backend import Answer, Disconnected, ReplyTap
from .request import ApiError, ChatRequest, parse_chat_request
from .responses import Reply, chunk, completion_body, fit_headers, sse, usage
from .worker import GenerationWorker, Job


class LocalBackend:
    """One generator behind its worker, served under the generator's ``model_id``."""

    def __init__(self, generator: Generator, *, default_max_tokens: int = 512,
                 max_queue: int = 64, poll_interval: float = 0.5) -> None:
        self.generator = generator
        self.worker = GenerationWorker(generator, max_queue=max_queue)
        self.model_id = generator.model_id
        self.window = generator.context
        self.default_max_tokens = default_max_tokens
        self.poll_interval = poll_interval
        self.created = int(time.time())

    def parse(self, payload: Any) -> ChatRequest:
        return parse_chat_request(payload, models=(self.model_id,),
                                  default_max_tokens=self.default_max_tokens,
                                  prepare=self.generator.prepare)

    async def answer(self, chat: ChatRequest, disconnected: Disconnected) -> Answer:
        job = self.worker.submit(chat, asyncio.get_running_loop())
        fit: FitResult = await self._next_result(job, disconnected)
        reply, tap = Reply.new(self.model_id), ReplyTap()
        headers = fit_headers(fit)
        if not chat.stream:
            completion = await self._next_result(job, disconnected)
            body = completion_body(reply, fit, completion)
            tap.feed_message(body["choices"][0]["message"], completion.finish_reason)
            return Answer(headers, tap, body=body)
        async def cancel() -> None:  # a no-op once the job finished
            job.cancel.set()

        return Answer(headers, tap, events=_events(job, reply, fit, chat.include_usage, tap),
                      close=cancel)

    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self.card()]}

    def card(self) -> dict[str, Any]:
        return {"id": self.model_id, "object": "model", "created": self.created,
                "owned_by": "contextwindow", "context_window": self.generator.context,
                "policy": self.generator.policy}

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.model_id, "queued": self.worker.pending}

    async def aclose(self) -> None:
        self.worker.close(timeout=1.0)

    async def _next_result(self, job: Job, disconnected: Disconnected) -> Any:
        """The job's next result (its fit, then its completion): an error event is raised, and
        any failure while waiting (client gone, request cancelled) cancels the job first."""
        try:
            kind, value = await self._next_event(job, disconnected)
        except BaseException:
            job.cancel.set()
            raise
        if kind == "error":
            raise value
        return value

    async def _next_event(self, job: Job, disconnected: Disconnected) -> tuple[str, Any]:
        while True:
            try:
                return await asyncio.wait_for(job.events.get(), timeout=self.poll_interval)
            except TimeoutError:
                if await disconnected():
                    job.cancel.set()
                    raise ApiError(499, "client disconnected", type="server_error") from None


async def _events(job: Job, reply: Reply, fit: FitResult, include_usage: bool,
                  tap: ReplyTap) -> AsyncIterator[str]:
    """The server-sent events of a streamed reply, from the job's events."""
    try:
        yield sse(chunk(reply, {"role": "assistant", "content": ""}))
        while True:
            kind, value = await job.events.get()
            if kind == "text":
                tap.feed_delta({"content": value})
                yield sse(chunk(reply, {"content": value}))
                continue
            if kind == "done":
                tap.finish = value.finish_reason
                yield sse(chunk(reply, {}, value.finish_reason))
                if include_usage:
                    yield sse(chunk(reply, usage=usage(fit, value)))
            else:  # an error after the stream started: report it in-band, then stop
                tap.failed = True
                yield sse(value.body())
            return
    finally:
        job.cancel.set()  # no-op when finished; stops generation if the client left
