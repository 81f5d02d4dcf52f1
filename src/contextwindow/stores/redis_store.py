"""Redis persistence (extra ``contextwindow[redis]``): many app servers sharing one Redis.

Keys, for the prefix ``P`` (default ``contextwindow:``); a session id goes in verbatim as UTF-8
after a fixed tag, so no id can reach another session's keys, and ids are never used as
patterns (``*`` or ``a:b`` are plain ids):

- ``P msgs:<session>``: list of encoded messages, in append order;
- ``P ids:<session>``: hash, message id -> token of the ``append`` call that stored it;
- ``P summary:<session>``: the encoded summary;
- ``P sessions``: sorted set of the sessions with messages, scored by their first append;
- ``P summarized``: sorted set of the sessions with a summary, scored by their first summary;
- ``P clock``: the counter those scores come from;
- ``P vectors:<session>``: hash, ``<model> NUL <message index>`` -> embedding bytes.

``append`` is one Lua script, so the duplicate check, the ``RPUSH`` and the session index are
atomic. Durability is the server's: an acknowledged append survives a Redis crash only with
``appendonly yes`` and ``appendfsync always`` (``require_durable=True`` checks that at open).

Recall: the index is not kept in Redis but derived from the message list, which is the only
truth, so no crash can leave them apart. Each store object keeps a
:class:`~contextwindow.retrieval.lexical.LexicalIndex` per session it has searched (the
``recall_sessions`` most recently searched ones): the first search reads the whole list (in
chunks), each later one first reads what was appended since (``LRANGE`` from the indexed
length, in one ``MULTI`` with the session's first-append score, which changes when the session
is deleted and written again, so a stale index is rebuilt). BM25 statistics are the session's
own. The cost is the first search of a session in each process (benchmarks/bench_recall_stores.py
measures it at 100,000 messages) and the index's memory in the process.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ..errors import StoreError
from ..messages import Message, Summary
from ..retrieval.lexical import LexicalIndex
from ..retrieval.text import Hit, indexed_text
from . import base

DEFAULT_PREFIX = "contextwindow:"
_READ_CHUNK = 10_000  # messages per LRANGE while an index catches up

# KEYS: msgs list, ids hash, sessions zset, clock.  ARGV: session, token of this call, then
# (message id, encoded message) pairs. A retry of the same call (redis-py retries after a lost
# connection) finds its own token and succeeds without storing twice; a call with an id already
# stored (or twice in the call) stores nothing and is rejected.
_APPEND = """
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[2] then return 1 end
for i = 3, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[2]) == 0 then
    for j = 3, i - 2, 2 do redis.call('HDEL', KEYS[2], ARGV[j]) end
    return 0
  end
end
for i = 4, #ARGV, 2 do redis.call('RPUSH', KEYS[1], ARGV[i]) end
if not redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[1])
end
return 1
"""

# KEYS: summary, summarized zset, clock.  ARGV: encoded summary, session.
_SAVE_SUMMARY = """
redis.call('SET', KEYS[1], ARGV[1])
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[2])
end
return 1
"""


class RedisStore:
    """All sessions in one Redis database, under a key prefix.

    ``url`` is a redis-py URL (``redis://[:password@]host:6379/0``, ``rediss://`` for TLS,
    ``unix:///path.sock``); or pass a ready ``client`` (a ``redis.Redis``, not a cluster client:
    the session index spans keys). Safe to share between threads; in a forked child, redis-py
    opens fresh connections by itself.
    """

    def __init__(self, url: str = "redis://localhost:6379/0", *, prefix: str = DEFAULT_PREFIX,
                 client: Any = None, require_durable: bool = False,
                 recall_sessions: int = 64) -> None:
        redis = base.import_driver("redis", store="RedisStore", needs="the redis package",
                              extra="redis")
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        if not isinstance(prefix, str):
            raise StoreError(f"prefix must be a string, not {type(prefix).__name__}")
        self.prefix = prefix
        self._prefix = prefix.encode("utf-8")
        self._sessions_key = self._prefix + b"sessions"
        self._summarized_key = self._prefix + b"summarized"
        self._clock_key = self._prefix + b"clock"
        self._closed = threading.Event()
        self._owns_client = client is None
        if isinstance(recall_sessions, bool) or not isinstance(recall_sessions, int) or (
                recall_sessions < 1):
            raise StoreError(f"recall_sessions must be an integer >= 1, not {recall_sessions!r}")
        self._recall_sessions = recall_sessions
        self._recall: OrderedDict[str, _SessionIndex] = OrderedDict()
        self._recall_lock = threading.Lock()
        self._aio: tuple[Any, Any] | None = None  # (event loop, its async append script)
        try:
            self._client = client if client is not None else redis.Redis.from_url(url)
        except (ValueError, *self._errors) as exc:
            raise StoreError(f"cannot open Redis store: {exc}") from exc
        kwargs = self._client.connection_pool.connection_kwargs
        self.where = (f"redis unix socket {kwargs['path']}" if "path" in kwargs else
                      f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
                      f"/{kwargs.get('db', 0)}")
        self._append_script = self._client.register_script(_APPEND)
        self._summary_script = self._client.register_script(_SAVE_SUMMARY)
        self._call(self._client.ping)
        if require_durable:
            self._check_durable()

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._closed.is_set():
            raise StoreError(f"the Redis store {self.where} is closed")
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise StoreError(f"Redis store {self.where} failed: {exc}") from exc

    def _key(self, kind: bytes, session: str) -> bytes:
        return self._prefix + kind + b":" + base.check_session(session).encode("utf-8")

    def _check_durable(self) -> None:
        try:
            config = self._client.config_get("append*")
        except self._errors as exc:
            raise StoreError(f"cannot check the durability settings of {self.where} "
                             f"(CONFIG GET refused: {exc})") from exc
        found = {_text(key): _text(value) for key, value in config.items()}
        if found.get("appendonly") != "yes" or found.get("appendfsync") != "always":
            raise StoreError(
                f"{self.where} may lose acknowledged writes: it has appendonly "
                f"{found.get('appendonly')!r} and appendfsync {found.get('appendfsync')!r}; "
                "durable storage needs appendonly yes and appendfsync always")

    # -- the Store protocol -----------------------------------------------------------------
    def append(self, session: str, message: Message) -> None:
        self._append(session, message, secrets.token_hex(8))

    def append_many(self, session: str, messages: list[Message]) -> None:
        self._append_all(session, messages, secrets.token_hex(8))

    def _append(self, session: str, message: Message, token: str) -> None:
        self._append_all(session, [message], token)

    def _append_all(self, session: str, messages: list[Message], token: str) -> None:
        keys, args = self._append_request(session, messages, token)
        if messages and not self._call(self._append_script, keys=keys, args=args):
            raise self._duplicate(session, messages)

    def _append_request(self, session: str, messages: list[Message], token: str
                        ) -> tuple[list[bytes], list[Any]]:
        """The append script's keys and arguments (the sync and async clients run the same)."""
        keys = [self._key(b"msgs", session), self._key(b"ids", session), self._sessions_key,
                self._clock_key]
        args: list[Any] = [session.encode("utf-8"), token]
        for message in messages:
            args += [message.id.encode("utf-8", "surrogatepass"), base.encode_message(message)]
        return keys, args

    def _duplicate(self, session: str, messages: list[Message]) -> StoreError:
        ids = ", ".join(repr(message.id) for message in messages)
        return StoreError(f"message id {ids} is already stored in session {session!r} of "
                          f"{self.where}")

    def load(self, session: str, start: int = 0) -> list[Message]:
        key = self._key(b"msgs", session)
        rows = self._call(self._client.lrange, key, base.check_start(start), -1)
        return [base.decode_message(data) for data in rows]

    def sessions(self) -> list[str]:
        def read() -> list[Any]:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.zrange(self._sessions_key, 0, -1)
                pipe.zrange(self._summarized_key, 0, -1)
                return pipe.execute()

        with_messages, with_summaries = self._call(read)
        return list(dict.fromkeys(_text(s) for s in [*with_messages, *with_summaries]))

    def delete(self, session: str) -> None:
        keys = [self._key(kind, session) for kind in (b"msgs", b"ids", b"summary", b"vectors")]
        member = session.encode("utf-8")

        def delete() -> None:
            with self._client.pipeline(transaction=True) as pipe:  # MULTI/EXEC: all or nothing
                pipe.delete(*keys)
                pipe.zrem(self._sessions_key, member)
                pipe.zrem(self._summarized_key, member)
                pipe.execute()

        self._call(delete)
        with self._recall_lock:
            self._recall.pop(session, None)

    def search(self, session: str, query: str, limit: int = 20) -> list[Hit]:
        self._key(b"msgs", session)  # checks the session id
        terms = base.search_terms(query, limit)
        if not terms:
            return []
        with self._recall_lock:  # the most recently searched sessions keep their index
            entry = self._recall.pop(session, None) or _SessionIndex()
            self._recall[session] = entry
            while len(self._recall) > self._recall_sessions:
                self._recall.popitem(last=False)
        with entry.lock:
            return entry.index.search(terms, limit) if self._catch_up(session, entry) else []

    def _catch_up(self, session: str, entry: _SessionIndex) -> bool:
        """Index what was appended to ``session`` since ``entry`` last looked (everything, if
        the session was deleted and written again); False if it has no messages."""
        while True:
            start = len(entry.index)
            epoch, rows = self._call(self._read_from, session, start)
            if epoch is None:
                return False
            if epoch != entry.epoch:
                entry.epoch, entry.index = epoch, LexicalIndex()
                if start:  # built for an earlier life of the session: start again
                    continue
            for position, data in enumerate(rows, start=start):
                entry.index.add(position, indexed_text(base.decode_message(data)))
            if len(rows) < _READ_CHUNK:
                return True

    def _read_from(self, session: str, start: int) -> list[Any]:
        """The session's first-append score and its next chunk of messages, atomically."""
        with self._client.pipeline(transaction=True) as pipe:
            pipe.zscore(self._sessions_key, session.encode("utf-8"))
            pipe.lrange(self._key(b"msgs", session), start, start + _READ_CHUNK - 1)
            return pipe.execute()

    def save_vectors(self, session: str, model: str, vectors: Mapping[int, bytes]) -> None:
        key = self._key(b"vectors", session)
        rows = base.check_vectors(model, vectors)

        def save() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                for position, data in rows:
                    pipe.hsetnx(key, _vector_field(model, position), data)
                pipe.execute()

        if rows:
            self._call(save)

    def load_vectors(self, session: str, model: str) -> dict[int, bytes]:
        key = self._key(b"vectors", session)
        mine = _vector_field(base.check_model(model), 0)[:-1]
        stored = self._call(self._client.hgetall, key)
        return {int(name[len(mine):]): data for name, data in stored.items()
                if name.startswith(mine)}

    def save_summary(self, session: str, summary: Summary) -> None:
        keys = [self._key(b"summary", session), self._summarized_key, self._clock_key]
        self._call(self._summary_script, keys=keys,
                   args=[base.encode_summary(summary), session.encode("utf-8")])

    def load_summary(self, session: str) -> Summary | None:
        data = self._call(self._client.get, self._key(b"summary", session))
        return None if data is None else base.decode_summary(data)

    # -- async twins on redis.asyncio (see contextwindow.stores.aio) -------------------------
    async def aappend(self, session: str, message: Message) -> None:
        await self.aappend_many(session, [message])

    async def aappend_many(self, session: str, messages: list[Message]) -> None:
        keys, args = self._append_request(session, messages, secrets.token_hex(8))
        if messages and not await self._acall(self._async_script()(keys=keys, args=args)):
            raise self._duplicate(session, messages)

    async def _acall(self, pending: Any) -> Any:
        try:
            return await pending
        except self._errors as exc:
            raise StoreError(f"Redis store {self.where} failed: {exc}") from exc

    def _async_script(self) -> Any:
        """The append script on a ``redis.asyncio`` client of the same server, for the running
        event loop (an async connection belongs to the loop that opened it)."""
        if self._closed.is_set():
            raise StoreError(f"the Redis store {self.where} is closed")
        loop = asyncio.get_running_loop()
        if self._aio is None or self._aio[0] is not loop:
            from redis import asyncio as aioredis

            pool = self._client.connection_pool
            connection = getattr(aioredis, pool.connection_class.__name__)
            client = aioredis.Redis(connection_pool=aioredis.ConnectionPool(
                connection_class=connection, **pool.connection_kwargs))
            self._aio = (loop, client.register_script(_APPEND))
        return self._aio[1]

    def locks(self, *, ttl: float = 10.0) -> RedisLocks:
        """Session locks shared by every process on this Redis (:mod:`.locks`): leases of
        ``ttl`` seconds under this store's prefix, on its client."""
        return RedisLocks(self._client, self.prefix, ttl=ttl)

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            if self._owns_client:  # a client passed in stays the caller's to close
                self._client.close()


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StoreError(f"a stored session id is not UTF-8: {value!r}") from exc
    return value


# KEYS: the lock.  ARGV: token, ttl in ms.  Extend (1) or release (0 ttl) only one's own lock.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2])
else redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisLocks:
    """Leases in Redis, ``<prefix>lock:<session>``: a holder that stops renewing (crashed,
    partitioned) loses the lock after ``ttl`` seconds."""

    def __init__(self, client: Any, prefix: str, *, ttl: float = 10.0) -> None:
        self._client = client
        self._prefix = prefix.encode("utf-8") + b"lock:"
        self._ttl_ms = max(1, round(ttl * 1000))
        self.lease: float | None = ttl
        self._renew = client.register_script(_RENEW)
        import redis

        self._errors = (redis.RedisError,)

    def _key(self, session: str) -> bytes:
        return self._prefix + session.encode("utf-8")

    def try_acquire(self, session: str) -> str | None:
        token = secrets.token_hex(16)
        try:
            taken = self._client.set(self._key(session), token, nx=True, px=self._ttl_ms)
        except self._errors as exc:
            raise StoreError(f"cannot take the session lock in Redis: {exc}") from exc
        return token if taken else None

    def renew(self, session: str, token: str) -> bool:
        try:
            return bool(self._renew(keys=[self._key(session)], args=[token, self._ttl_ms]))
        except self._errors as exc:
            raise StoreError(f"cannot renew the session lock in Redis: {exc}") from exc

    def held(self, session: str, token: str) -> bool:
        try:
            return self._client.get(self._key(session)) == token.encode()
        except self._errors as exc:
            raise StoreError(f"cannot read the session lock in Redis: {exc}") from exc

    def release(self, session: str, token: str) -> None:
        try:
            self._renew(keys=[self._key(session)], args=[token, 0])
        except self._errors as exc:
            raise StoreError(f"cannot release the session lock in Redis: {exc}") from exc

    def close(self) -> None:
        """The client belongs to the store."""


class _SessionIndex:
    """One session's in-process index and the life of the session it was built for (the
    session's score in the sessions set, new each time it is first written)."""

    def __init__(self) -> None:
        self.epoch: float | None = None
        self.index = LexicalIndex()
        self.lock = threading.Lock()


def _vector_field(model: str, position: int) -> bytes:
    return model.encode("utf-8") + b"\x00" + str(position).encode("ascii")
