"""What stands between the network and the routes: authentication, size and shape limits.

A server reachable by others must refuse cheaply what would cost it dearly: a request without
the key (401 before anything is read), a body over the limit (413 while it streams in, before
it is parsed), JSON nested deeper than any chat request needs (400, never a ``RecursionError``),
and a message so long that it cannot fit the window whatever its tokens (400 before it is
tokenized). Keys are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .protocol import ApiError

MAX_JSON_DEPTH = 32
"""Deeper than any chat request (message > content part > image_url > ...) ever nests."""
MAX_CHARS_PER_TOKEN = 32
"""No tokenizer turns more characters than this into one token of ordinary text, so a message
longer than ``window * MAX_CHARS_PER_TOKEN`` characters cannot fit and is refused uncounted."""
OPEN_PATHS = frozenset({"/health"})
"""Paths answered without the key (load-balancer health checks)."""


@dataclass(frozen=True)
class Limits:
    """The limits every request is held to (see the module docstring)."""

    api_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_json_depth: int = MAX_JSON_DEPTH
    request_timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key:
            raise ConfigError("the API key must not be empty")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be >= 1024, not {self.max_body_bytes}")
        if self.request_timeout <= 0:
            raise ConfigError(f"request_timeout must be positive, not {self.request_timeout}")

    def __repr__(self) -> str:  # never print the key
        key = "set" if self.api_key else None
        return (f"Limits(api_key={key}, max_body_bytes={self.max_body_bytes}, "
                f"max_json_depth={self.max_json_depth}, request_timeout={self.request_timeout})")

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the key (constant-time compare)."""
        if self.api_key is None:
            return True
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), self.api_key.encode("utf-8"))


def check_bind(host: str, api_key: str | None, *, allow_insecure: bool) -> None:
    """Refuse to listen beyond this machine without a key, unless told to."""
    if api_key or allow_insecure or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"refusing to listen on {host} without an API key: set one with "
                          "--api-key-env VAR (clients then send 'Authorization: Bearer KEY'), "
                          "or pass --allow-insecure to serve anyone who can reach the port")


def parse_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a request body: any malformed, non-UTF-8, NaN-bearing or too deeply nested JSON
    is a 400 ``invalid_json``."""
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(400, f"We could not parse the JSON body of your request ({reason}). "
                       "The request body must be valid JSON.", code="invalid_json") from None
    # Depth is at most the number of brackets: count them in C before walking in Python.
    if body.count(b"[") + body.count(b"{") > max_depth and _depth(payload, max_depth):
        raise ApiError(400, f"The JSON body is nested more than {max_depth} levels deep.",
                       code="invalid_json")
    return payload


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = (item.values() if isinstance(item, dict) else item
                    if isinstance(item, list) else ())
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def check_message_sizes(messages: Any, window: int) -> None:
    """Refuse, before any tokenizing, a message whose text cannot fit the window, and text
    that is not valid Unicode (a lone surrogate from a ``\\ud800`` escape)."""
    if not isinstance(messages, list):
        return  # the request parser names the type error
    limit = window * MAX_CHARS_PER_TOKEN
    for index, message in enumerate(messages):
        for text in _texts(message):
            if len(text) > limit:
                raise ApiError(400, f"messages[{index}] has {len(text)} characters: more than "
                               f"the {window}-token window can hold whatever its tokens "
                               f"(the limit is {limit} characters)", param="messages",
                               code="context_length_exceeded")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(400, f"messages[{index}] is not valid Unicode text (a lone "
                               "surrogate)", param="messages", code="invalid_value") from None


def _texts(message: Any) -> list[str]:
    if not isinstance(message, Mapping):
        return []
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part["text"] for part in content
                if isinstance(part, Mapping) and isinstance(part.get("text"), str)]
    return []


# -- the ASGI middleware ------------------------------------------------------------------------
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Guard:
    """ASGI middleware: the key, then the body size, before the app sees a request.

    The body is read here, at most ``max_body_bytes`` of it (an oversized ``Content-Length`` is
    refused without reading anything), and replayed to the app; later ``receive`` calls go to
    the client, so the app still notices a disconnect.
    """

    def __init__(self, app: Any, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", ())}
        if scope["path"] not in OPEN_PATHS and not self.limits.authorized(
                headers.get("authorization")):
            await _refuse(send, ApiError(
                401, "Incorrect API key provided. Send it as 'Authorization: Bearer KEY'.",
                code="invalid_api_key"), {"www-authenticate": "Bearer"})
            return
        body = await self._read_body(headers.get("content-length"), receive)
        if body is None:
            await _refuse(send, ApiError(
                413, f"The request body is larger than {self.limits.max_body_bytes} bytes.",
                code="request_too_large"), {"connection": "close"})
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_body(self, length: str | None, receive: Receive) -> bytes | None:
        """The whole body, or None once it is known to exceed the limit."""
        cap = self.limits.max_body_bytes
        if length is not None and (not length.isdigit() or int(length) > cap):
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _refuse(send: Send, error: ApiError, headers: dict[str, str]) -> None:
    body = json.dumps(error.body()).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           *((k.encode(), v.encode()) for k, v in headers.items())]
    await send({"type": "http.response.start", "status": error.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
