"""The summarizer contract and how memories call one: protocol, timeout runner, adapters.

Kept apart from the prompt text and the model backends so that summary memories can depend on
this contract without reaching the backends, which import torch or openai.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError, SummarizerError
from ..messages import Message

__all__ = ["BaseSummarizer", "FunctionSummarizer", "Summarizer", "SummarizerWarning",
           "arun_summarizer", "run_summarizer"]


class SummarizerWarning(UserWarning):
    """Emitted when a summary memory falls back to trimming because its summarizer failed."""


@runtime_checkable
class Summarizer(Protocol):
    """What a summary memory needs: previous summary + messages being folded -> new summary.

    The result replaces ``previous`` entirely, so it must carry forward whatever of
    ``previous`` is still worth keeping (a *progressive* summary). An async variant,
    ``asummarize``, is optional: :func:`arun_summarizer` runs ``summarize`` in a worker thread
    when it is missing.
    """

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str: ...


class BaseSummarizer:
    """Convenience base: ``asummarize`` runs ``summarize`` in a worker thread."""

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        raise NotImplementedError

    async def asummarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        return await asyncio.to_thread(self.summarize, previous, messages)


def _validate(result: Any, summarizer: Any) -> str:
    if not isinstance(result, str):
        raise SummarizerError(f"{type(summarizer).__name__} returned "
                              f"{type(result).__name__}, not a string")
    if not result.strip():
        raise SummarizerError(f"{type(summarizer).__name__} returned an empty summary")
    return result.strip()


def _crashed(summarizer: Summarizer, exc: BaseException) -> SummarizerError:
    """A summarizer's unexpected error as the SummarizerError memories handle, worded the same
    whichever way (sync, threaded, async) the summarizer was called."""
    return SummarizerError(f"{type(summarizer).__name__} failed: {type(exc).__name__}: {exc}")


def _timed_out(summarizer: Summarizer, timeout: float) -> SummarizerError:
    return SummarizerError(f"{type(summarizer).__name__} timed out after {timeout:g} s")


def run_summarizer(summarizer: Summarizer, previous: str | None, messages: Sequence[Message],
                   *, timeout: float | None = None) -> str:
    """Call ``summarizer.summarize``; any exception, a non-string or empty result, or running
    longer than ``timeout`` seconds becomes :class:`SummarizerError`.

    With a timeout the call runs in a daemon thread; Python cannot interrupt a running thread,
    so on timeout that call finishes in the background and its result is discarded.
    """
    if timeout is None:
        try:
            result = summarizer.summarize(previous, messages)
        except SummarizerError:
            raise
        except Exception as exc:
            raise _crashed(summarizer, exc) from exc
        return _validate(result, summarizer)
    if timeout <= 0:
        raise ConfigError(f"timeout must be positive, not {timeout}")
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = summarizer.summarize(previous, messages)
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=target, name="contextwindow-summarizer", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise _timed_out(summarizer, timeout)
    if "error" in box:
        error = box["error"]
        if isinstance(error, SummarizerError):
            raise error
        raise _crashed(summarizer, error) from error
    return _validate(box.get("result"), summarizer)


async def arun_summarizer(summarizer: Summarizer, previous: str | None,
                          messages: Sequence[Message], *, timeout: float | None = None) -> str:
    """Async :func:`run_summarizer`: awaits ``asummarize`` if the summarizer has one, else runs
    ``summarize`` in a worker thread."""
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be positive, not {timeout}")
    method = getattr(summarizer, "asummarize", None)
    if method is not None:
        call: Awaitable[Any] = method(previous, messages)
    else:
        call = asyncio.to_thread(summarizer.summarize, previous, messages)
    try:
        result = await asyncio.wait_for(call, timeout)
    except TimeoutError as exc:
        if timeout is None:  # the summarizer's own TimeoutError: no limit of ours ran out
            raise _crashed(summarizer, exc) from exc
        raise _timed_out(summarizer, timeout) from None
    except SummarizerError:
        raise
    except Exception as exc:
        raise _crashed(summarizer, exc) from exc
    return _validate(result, summarizer)


class FunctionSummarizer(BaseSummarizer):
    """Adapt a function ``fn(previous, messages) -> str`` (sync or ``async def``)."""

    def __init__(self, fn: Callable[[str | None, Sequence[Message]], Any]) -> None:
        if not callable(fn):
            raise ConfigError("FunctionSummarizer needs a callable")
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        if self.is_async:
            return asyncio.run(self.fn(previous, messages))
        return self.fn(previous, messages)

    async def asummarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        if self.is_async:
            return await self.fn(previous, messages)
        return await asyncio.to_thread(self.fn, previous, messages)

    def __repr__(self) -> str:
        return f"FunctionSummarizer({getattr(self.fn, '__name__', self.fn)!r})"


def cut_summary(text: str, limit: int, cost: Callable[[str], int], summarizer: Any) -> str:
    """``text`` cut so that ``cost(text) <= limit``.

    A summarizer with ``fit_summary(text, fits)`` (KeyFacts, Combined) shortens it first: the
    oldest fact lines go, the newest stay. Whatever still does not fit is cut to its longest
    fitting prefix, cut back to the end of a line (if that keeps at least half) or of a word,
    so no fact is left half-written.
    """
    if cost(text) <= limit:
        return text
    fit_summary = getattr(summarizer, "fit_summary", None)  # an optional summarizer method
    if callable(fit_summary):
        shorter = fit_summary(text, lambda candidate: cost(candidate) <= limit)
        if isinstance(shorter, str):
            text = shorter.strip()
            if cost(text) <= limit:
                return text
    lo, hi = 0, len(text)  # cost(text[:lo]) <= limit holds throughout
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    if lo < len(text) and text[lo] != "\n":  # inside a line: end at a line if it costs
        line_end = cut.rfind("\n")           # at most half, else at a word boundary
        if line_end >= len(cut) // 2:
            cut = cut[:line_end]
        elif cut and not cut[-1].isspace() and not text[lo].isspace():
            boundary = max(cut.rfind(" "), line_end)
            if boundary > 0:
                cut = cut[:boundary]
    cut = cut.rstrip()
    while cut and cost(cut) > limit:  # token counts are not always monotone in length
        cut = cut[:-1].rstrip()
    return cut
