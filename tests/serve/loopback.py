"""An upstream in the test's own event loop, on 127.0.0.1: for tests that drive an
``UpstreamBackend`` directly and need the raw bytes it sent."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@contextlib.asynccontextmanager
async def loopback_upstream(reply: dict[str, Any] | list[bytes],
                            seen: list[bytes] | None = None) -> AsyncIterator[str]:
    """The API base (``http://127.0.0.1:PORT/v1``) of a server answering ``reply`` to every
    chat request: a JSON body, or a list of bytes streamed one write each as an event
    stream. Each request's body is appended to ``seen``."""
    async def complete(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if seen is not None:
            seen.append(body)
        if isinstance(reply, dict):
            return web.json_response(reply)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for piece in reply:
            await response.write(piece)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/v1"))
    finally:
        await server.close()
