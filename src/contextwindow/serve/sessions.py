"""Server-side sessions: the conversation lives in the store, clients send only what is new.

A request with the header ``X-Session-Id: ID`` is one *turn* of session ``ID``:

1. the turn takes the session's lock (the store's own ``locks()``, see
   :mod:`contextwindow.stores.locks`: shared by every server process on the same store),
   waiting at most ``lock_timeout`` seconds (then 409 ``session_busy``, which OpenAI clients
   retry);
2. it reads the stored history and answers ``history + request messages``, fitted to the window;
3. only once the answer is complete does it append the request's messages and the reply (one
   ``append_many``: one transaction, all or nothing) and release the lock. A failed, cancelled
   or timed-out answer stores nothing.

So the turns of one session are serialised, across processes too: each sees every turn
acknowledged before it began, in order, none twice. Message ids record the turn
(``turn-<hex>.<i>``, the reply ``turn-<hex>.reply``); a turn whose reply is missing (a store
without transactions, a writer killed between two appends) is left out of the history: it was
never acknowledged.

Each process caches the histories it has read (and what they cost in tokens), and reads only
what was appended since: the session's newest message (``load(session, -1)``, cheap in every
store), which is the one it last saw unless another process added to the session; then the last
few (``load(session, -16)``), or from its offset when more came meanwhile. A 10,000-message
session is not reloaded, nor re-counted, per turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import StoreError
from ..messages import Message
from ..stores import open as open_store
from ..stores.base import store_ranker
from ..stores.locks import lock_key, session_locks
from ..window import BoundedCache
from .protocol import ApiError, ChatRequest, ReplyTap

__all__ = ["SESSION_HEADER", "Sessions", "Turn", "check_session_id", "open_store"]

SESSION_HEADER = "X-Session-Id"
TAIL_PROBE = 16
"""Messages read from the end of a cached session to find what other processes added."""
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
TURN_ID = re.compile(r"(turn-[0-9a-f]{32})\.(\d+|reply)")
log = logging.getLogger("contextwindow.serve")


def check_session_id(raw: str) -> str:
    """Session ids: 1-128 characters of ``A-Z a-z 0-9 . _ : @ -``, starting alphanumeric."""
    if not SESSION_ID.fullmatch(raw):
        raise ApiError(400, "Invalid session id: use 1 to 128 characters among letters, digits "
                       "and . _ : @ - (starting with a letter or digit).", param=SESSION_HEADER,
                       code="invalid_session_id")
    return raw


@dataclass
class _View:
    """A session's history as this process last read it."""

    raw: int = 0  # stored messages seen, complete or not
    last_id: str | None = None
    complete: list[Message] = field(default_factory=list)
    tokens: int = 0  # what ``complete[:counted]`` costs, when the sessions count tokens
    counted: int = 0
    pending: list[Message] = field(default_factory=list)  # a turn still without its reply
    pending_turn: str | None = None

    def settle(self, count: Callable[[Message], int] | None) -> None:
        """Count what was absorbed since the last count (a chat template's count of a new
        reply takes about a millisecond: a turn does it after its answer has gone out)."""
        if count is not None:
            self.tokens += sum(map(count, self.complete[self.counted:]))
            self.counted = len(self.complete)

    def absorb(self, messages: list[Message]) -> None:
        for message in messages:
            match = TURN_ID.fullmatch(message.id)
            if match is None or match[1] != self.pending_turn:
                self.pending, self.pending_turn = [], None  # an unfinished turn: never answered
            done = [message] if match is None else []
            if match is not None and match[2] == "reply":
                done = [*self.pending, message]
                self.pending, self.pending_turn = [], None
            elif match is not None:
                self.pending.append(message)
                self.pending_turn = match[1]
            self.complete.extend(done)
        self.raw += len(messages)
        if messages:
            self.last_id = messages[-1].id


class Sessions:
    """Turns over one store (see the module docstring); ``count`` prices messages so a turn can
    tell the fitter what its history costs without summing it again."""

    def __init__(self, store: Any, *, lock_timeout: float = 30.0, lock_ttl: float = 10.0,
                 count: Callable[[Message], int] | None = None, cache_size: int = 1024,
                 threads: int = 16) -> None:
        self.store = store
        self.locks = session_locks(store, ttl=lock_ttl)
        self.lock_timeout = lock_timeout
        self.count = count
        self._views: BoundedCache[str, _View] = BoundedCache(cache_size)
        self._local: dict[int, list[Any]] = {}  # lock key -> [asyncio.Lock, users]
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="contextwindow-store")

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the store threads; a StoreError is a 503 for the client."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except StoreError as exc:
            raise _unavailable(exc) from None

    async def begin(self, session: str) -> Turn:
        """Take the session's lock and read its history (ApiError 409 if busy too long)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_timeout
        key = lock_key(session)
        entry = self._local.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with asyncio.timeout(self.lock_timeout):  # no task, unlike wait_for
                await entry[0].acquire()
        except TimeoutError:
            self._unuse(key)
            raise _busy(session) from None
        try:
            token, view = await self._enter(session, deadline)
        except BaseException:
            self._release_local(key)
            raise
        return Turn(self, session, key, token, view)

    async def history(self, session: str) -> list[Message]:
        """The acknowledged turns, read afresh (no lock: unfinished turns are left out). A
        session with nothing stored is a 404, as an unknown resource is for OpenAI; a session
        whose only turn is unfinished exists (200, no messages)."""
        view = _View()
        view.absorb(await self.run(self.store.load, session))
        if view.raw == 0:
            raise ApiError(404, f"No session {session!r}: nothing is stored under that id.",
                           code="session_not_found")
        return view.complete

    async def delete(self, session: str) -> None:
        turn = await self.begin(session)
        try:
            await self.run(self.store.delete, session)
        finally:
            self._forget(session)
            await turn.close()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(StoreError, OSError):
            self.locks.close()
        with contextlib.suppress(StoreError):
            self.store.close()

    # -- plumbing -------------------------------------------------------------------------------
    async def _enter(self, session: str, deadline: float) -> tuple[str, _View]:
        """The shared lock and the history, in one trip to the store threads per attempt."""
        loop, delay = asyncio.get_running_loop(), 0.002
        while True:
            future = loop.run_in_executor(self._executor, self._try_enter, session)
            try:
                entered = await asyncio.shield(future)
            except StoreError as exc:
                raise _unavailable(exc) from None
            except asyncio.CancelledError:  # if the lock is taken after all, give it back
                future.add_done_callback(lambda done: self._abandon(session, done))
                raise
            if entered is not None:
                return entered
            if loop.time() + delay > deadline:
                raise _busy(session)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.05)

    def _abandon(self, session: str, done: asyncio.Future) -> None:
        if not done.cancelled() and done.exception() is None and done.result() is not None:
            self._executor.submit(self.locks.release, session, done.result()[0])

    def _try_enter(self, session: str) -> tuple[str, _View] | None:
        token = self.locks.try_acquire(session)
        if token is None:
            return None
        try:
            return token, self._refresh(session)
        except BaseException:
            self.locks.release(session, token)
            raise

    def _refresh(self, session: str) -> _View:
        """The cached view brought up to date and counted, or a fresh one (runs on a store
        thread)."""
        view = self._caught_up(session)
        view.settle(self.count)
        return view

    def _caught_up(self, session: str) -> _View:
        view = self._views.get(session)
        if view is not None and view.raw:
            # The newest message, from the end (cheap in every store): if it is ours, nothing
            # came meanwhile (the usual turn: one message read, not TAIL_PROBE). Else the
            # newest few; if ours is among them, what follows it is new. Else many turns came
            # meanwhile: read from our offset.
            newest = self.store.load(session, -1)
            if newest and newest[0].id == view.last_id:
                return view
            tail = self.store.load(session, -TAIL_PROBE)
            if len(tail) == TAIL_PROBE and all(m.id != view.last_id for m in tail):
                tail = self.store.load(session, view.raw - 1)
            ids = [message.id for message in tail]
            if view.last_id in ids:  # else the session was deleted meanwhile: read it afresh
                view.absorb(tail[ids.index(view.last_id) + 1:])
                return view
        view = _View()
        view.absorb(self.store.load(session))
        self._views.put(session, view)
        return view

    def _view(self, session: str) -> _View | None:
        return self._views.get(session)

    def _forget(self, session: str) -> None:
        """Drop what this process read of ``session``: an empty view is read afresh."""
        self._views.put(session, _View())

    def _release_local(self, key: int) -> None:
        self._local[key][0].release()
        self._unuse(key)

    def _unuse(self, key: int) -> None:
        entry = self._local[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._local[key]


class Turn:
    """One turn holding its session's lock: ``history`` to answer from, then :meth:`close`,
    which stores a complete reply with the request's messages and releases the lock."""

    def __init__(self, sessions: Sessions, session: str, key: int, token: str,
                 view: _View) -> None:
        self.sessions = sessions
        self.session = session
        self._view = view  # unchanged until close: this turn holds the session's lock
        self.counted = (len(view.complete), view.tokens)
        self._key = key
        self._token: str | None = token
        lease = sessions.locks.lease
        self._renewer = asyncio.ensure_future(self._renew_lease(lease)) if lease else None

    @property
    def history(self) -> list[Message]:
        """The session's acknowledged messages when the turn began (a copy)."""
        return self._view.complete[:self.counted[0]]

    def extend(self, chat: ChatRequest) -> ChatRequest:
        """``chat`` as this turn of the session: the stored history, then its new messages
        (whose price the fit need not sum again), its older turns ranked by the store's index
        for the recall mode."""
        messages = self.history  # one copy of a long history per turn, not two
        messages += chat.messages
        return replace(chat, messages=messages, counted=self.counted,
                       rank=store_ranker(self.sessions.store, self.session))

    async def close(self, new: list[Message] | None = None, tap: ReplyTap | None = None) -> bool:
        """Store ``new`` and the reply if it is complete (one transaction), then release the
        lock; without them (a failed turn), only release. Idempotent; True if stored.

        It returns once the turn is stored: the release follows in the background, and the
        session's in-process lock goes only when it is done (even if this caller is cancelled
        meanwhile), so the next turn never starts before the lock is free."""
        if self._token is None:
            return False
        token, self._token = self._token, None
        if self._renewer is not None:
            self._renewer.cancel()
        turn = f"turn-{uuid.uuid4().hex}"
        messages = None if new is None or tap is None or not tap.complete else [
            *(replace(m, id=f"{turn}.{i}") for i, m in enumerate(new)),
            tap.message(f"{turn}.reply")]
        loop, executor = asyncio.get_running_loop(), self.sessions._executor
        stored = loop.run_in_executor(executor, self._store, messages, token)

        def release(_: Any) -> None:
            loop.run_in_executor(executor, self._release, token).add_done_callback(
                lambda _: self.sessions._release_local(self._key))

        stored.add_done_callback(release)
        try:
            return await asyncio.shield(stored)
        except StoreError as exc:
            raise _unavailable(exc) from None

    def _store(self, messages: list[Message] | None, token: str) -> bool:
        """On a store thread: append the turn if the lock is still ours."""
        sessions = self.sessions
        if messages is None:
            return False
        if not sessions.locks.held(self.session, token):
            raise ApiError(409, f"session {self.session!r} was taken over while this turn ran; "
                           "nothing was stored", code="session_busy")
        try:
            sessions.store.append_many(self.session, messages)  # one transaction
        except BaseException:
            sessions._forget(self.session)  # whatever was stored, re-read it next time
            raise
        view = sessions._view(self.session)
        if view is not None:
            view.absorb(messages)  # counted by _release, once the answer is on its way
        return True

    def _release(self, token: str) -> None:
        """On a store thread once the turn is over: free the session's lock, then count what
        the turn added to this process's view (the next turn here starts after this)."""
        try:
            self.sessions.locks.release(self.session, token)
        except StoreError as exc:  # a lease runs out by itself
            log.warning("could not release the lock of a session: %s", exc)
        view = self.sessions._view(self.session)
        if view is not None:
            view.settle(self.sessions.count)

    async def _renew_lease(self, lease: float) -> None:
        with contextlib.suppress(ApiError):  # a lost lease shows at close
            while self._token is not None:
                await asyncio.sleep(lease / 3)
                if not await self.sessions.run(self.sessions.locks.renew, self.session,
                                               self._token):
                    return


def _unavailable(exc: StoreError) -> ApiError:
    return ApiError(503, f"the session store failed: {exc}", type="server_error",
                    code="store_unavailable")


def _busy(session: str) -> ApiError:
    return ApiError(409, f"session {session!r} is busy with another request; retry",
                    code="session_busy")
