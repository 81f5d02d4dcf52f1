"""The generation worker: one thread runs requests one at a time, in arrival order.

One model serves every request, so jobs queue (FIFO) and the worker fits, prefills and decodes
each in turn: concurrent clients never share a cache or see each other's tokens, and a greedy
request gives the same text alone or under load. A job reports back to the event loop through
its ``events`` queue: ``("fit", FitResult)``, ``("text", str)`` while streaming, then
``("done", Completion)`` or ``("error", ApiError)``. Setting ``cancel`` stops it at the next
token.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import BudgetExceededError, ContextWindowError
from ..generation import Engine
from .protocol import ApiError, ChatRequest


@dataclass
class Job:
    """One request on its way through the worker; its events go back to the event loop."""

    request: ChatRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancel: threading.Event = field(default_factory=threading.Event)

    def emit(self, kind: str, value: Any = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone: nobody is listening any more
            self.cancel.set()


class GenerationWorker:
    """Runs jobs on one thread in arrival order; ``submit`` never blocks."""

    def __init__(self, generator: Engine, *, max_queue: int = 64) -> None:
        self.generator = generator
        self.max_queue = max_queue
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._pending = 0
        self._count_lock = threading.Lock()
        #: Finished jobs by outcome: "completed", "cancelled" (client gone) or "failed".
        self.stats = {"completed": 0, "cancelled": 0, "failed": 0}
        self._thread = threading.Thread(target=self._run, name="contextwindow-generate",
                                        daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._pending

    def submit(self, request: ChatRequest, loop: asyncio.AbstractEventLoop) -> Job:
        with self._count_lock:
            if self._pending >= self.max_queue:
                raise ApiError(503, f"the server is busy ({self._pending} requests queued); "
                               "retry later", type="server_error", code="server_overloaded")
            self._pending += 1
        job = Job(request=request, loop=loop, events=asyncio.Queue())
        self._jobs.put(job)
        return job

    def close(self, timeout: float | None = 5.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            outcome = "failed"
            try:
                outcome = self._process(job)
            finally:
                with self._count_lock:
                    self._pending -= 1
                    self.stats[outcome] += 1

    def _process(self, job: Job) -> str:
        if job.cancel.is_set():
            job.emit("error", ApiError(499, "cancelled", type="server_error"))
            return "cancelled"
        request = job.request
        try:
            fit = self.generator.fit(request.messages, request.params.max_tokens)
        except BudgetExceededError as exc:
            job.emit("error", ApiError(400, str(exc), param="messages",
                                       code="context_length_exceeded"))
            return "failed"
        except ContextWindowError as exc:
            job.emit("error", ApiError(400, str(exc), param="messages", code="invalid_value"))
            return "failed"
        except Exception as exc:  # noqa: BLE001 -- a bug or a broken model: report it, keep serving
            job.emit("error", ApiError(500, f"internal error while preparing the prompt: {exc}",
                                       type="server_error"))
            return "failed"
        job.emit("fit", fit)
        on_text = (lambda text: job.emit("text", text)) if request.stream else None
        try:
            completion = self.generator.generate(fit, request.params, on_text=on_text,
                                                 cancel=job.cancel)
        except Exception as exc:  # noqa: BLE001 -- as above: one failed request, not the server
            job.emit("error", ApiError(500, f"generation failed: {exc}", type="server_error"))
            return "failed"
        job.emit("done", completion)
        return "cancelled" if completion.finish_reason == "cancelled" else "completed"
