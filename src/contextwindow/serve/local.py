"""The local backend: the generation worker on this machine's model.

Requests go to :class:`~._worker.GenerationWorker` (one at a time, FIFO). The worker reports the
fit first (so the trimming headers go out before the first token), then text pieces when
streaming, then the completion; a client that leaves cancels its generation at the next token.

The OpenAI-shaped bodies of its replies are built here too (a gateway passes its upstream's
on): every object of one reply repeats the same envelope (:class:`Reply`), and a stream chunk,
whether it carries a delta or the final usage, is built by :func:`chunk` alone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..generation import Completion, Engine, FitResult
from ..tokens import TokenCounter
from ._worker import GenerationWorker, Job
from .protocol import Answer, ApiError, ChatRequest, Disconnected, ReplyTap, fit_headers, sse
from .request import parse_chat_request


class LocalBackend:
    """One engine (transformers or llama.cpp) behind its worker, served under its ``model_id``."""

    def __init__(self, generator: Engine, *, default_max_tokens: int = 512,
                 max_queue: int = 64, poll_interval: float = 0.5) -> None:
        self.generator = generator
        self.worker = GenerationWorker(generator, max_queue=max_queue)
        self.model_id = generator.model_id
        self.window = generator.context
        self.counter: TokenCounter | None = None  # the fit counts through the model's chat template
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
        """The model as ``/v1/models`` lists it: its window, the fit's policy and the engine
        that decodes (``transformers`` or ``llama.cpp``)."""
        return {"id": self.model_id, "object": "model", "created": self.created,
                "owned_by": "contextwindow", "context_window": self.generator.context,
                "policy": self.generator.policy, "engine": self.generator.engine}

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
