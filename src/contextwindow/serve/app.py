"""The FastAPI app: routes and error handlers only.

One chat request reads top to bottom in :meth:`ChatApi.chat_completions`: the checks of
:mod:`.security` (the :class:`~.security.Guard` middleware in front of everything, then the
body's JSON), the parse (:mod:`.request`), the session's turn (:mod:`.sessions`) when the
request names one, the backend's answer (:mod:`.protocol`'s :class:`~.protocol.Backend`: the
local engine in :mod:`.local`, or the gateway's upstream in :mod:`.upstream`, each fitting the
messages to the window, asking its model and shaping the reply), then the reply sent and the
turn committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ConfigError, ContextWindowError
from ..messages import Message
from .protocol import SSE_DONE, Answer, ApiError, Backend, ChatRequest, sse
from .security import Guard, Limits, check_message_sizes, parse_json
from .sessions import SESSION_HEADER, Sessions, Turn, check_session_id

log = logging.getLogger("contextwindow.serve")


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _error_response(exc)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = (f"Unknown request URL: {request.method} {request.url.path}."
               if exc.status_code in (404, 405) else str(exc.detail))
    return _error_response(ApiError(exc.status_code, message, code=code))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error_response(ApiError(400, str(exc), code="invalid_value"))


async def _library_error(request: Request, exc: ContextWindowError) -> JSONResponse:
    return _error_response(ApiError(400, str(exc), code="invalid_value"))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error_response(ApiError(500, f"internal error ({type(exc).__name__})",
                                    type="server_error"))


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await app.state.api.aclose()


class ChatApi:
    """The state behind the routes: one backend, the sessions (if a store is configured) and
    the request limits."""

    def __init__(self, backend: Backend, *, sessions: Sessions | None = None,
                 limits: Limits | None = None) -> None:
        self.backend = backend
        self.sessions = sessions
        self.limits = limits or Limits()

    async def health(self) -> dict[str, Any]:
        return await self.backend.health()

    async def list_models(self) -> dict[str, Any]:
        return await self.backend.models()

    async def get_model(self, model_id: str) -> Any:
        if model_id != self.backend.model_id:
            raise ApiError(404, f"The model `{model_id}` does not exist.", param="model",
                           code="model_not_found")
        return self.backend.card()

    async def chat_completions(self, request: Request) -> Any:
        """Parse, take the session's turn (if any), answer, reply, commit the turn."""
        payload = parse_json(await request.body(), self.limits.max_json_depth)
        session = self._session_of(request)
        chat = self._parse(payload)
        turn = None if session is None else await self._sessions().begin(session)
        try:
            answer = await self._answer(chat if turn is None else turn.extend(chat), request)
            if answer.body is not None:
                if turn is not None:
                    await turn.close(chat.messages, answer.tap)
                return JSONResponse(answer.body, headers=answer.headers)
        except BaseException:
            if turn is not None:
                await turn.close()
            raise
        return _Stream(_streamed(answer, turn, chat.messages), answer, turn)

    async def get_session(self, session_id: str) -> dict[str, Any]:
        messages = await self._sessions().history(check_session_id(session_id))
        return {"id": session_id, "object": "session", "messages": [_record(m) for m in messages]}

    async def delete_session(self, session_id: str) -> dict[str, Any]:
        await self._sessions().delete(check_session_id(session_id))
        return {"id": session_id, "object": "session.deleted", "deleted": True}

    async def aclose(self) -> None:
        await self.backend.aclose()
        if self.sessions is not None:
            self.sessions.close()

    def _parse(self, payload: Any) -> ChatRequest:
        """The body as the backend's request, after the size bound that needs no counting."""
        if isinstance(payload, dict):
            check_message_sizes(payload.get("messages"), self.backend.window)
        return self.backend.parse(payload)

    async def _answer(self, chat: ChatRequest, request: Request) -> Answer:
        try:
            async with asyncio.timeout(self.limits.request_timeout):
                return await self.backend.answer(chat, request.is_disconnected)
        except TimeoutError:
            raise ApiError(504, f"the request took longer than {self.limits.request_timeout:g} "
                           "seconds", type="server_error", code="timeout") from None

    def _session_of(self, request: Request) -> str | None:
        raw = request.headers.get(SESSION_HEADER)
        if raw is None:
            return None
        if self.sessions is None:
            raise ApiError(400, "this server keeps no sessions (start it with --store)",
                           param=SESSION_HEADER, code="sessions_disabled")
        return check_session_id(raw)

    def _sessions(self) -> Sessions:
        if self.sessions is None:
            raise ApiError(404, "this server keeps no sessions (start it with --store)",
                           code="sessions_disabled")
        return self.sessions


class _Stream(StreamingResponse):
    """A streamed answer. However the response ends (even before its first byte, when the
    event generator never runs), the answer's upstream connection or generation is freed and
    a session turn's lock released."""

    def __init__(self, content: AsyncIterator[str], answer: Answer,
                 turn: Turn | None = None) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={**answer.headers, "Cache-Control": "no-cache"})
        self.answer = answer
        self.turn = turn

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.turn is not None:
                await self.turn.close()  # a no-op once the stream stored the turn
            if self.answer.close is not None:
                await self.answer.close()


async def _streamed(answer: Answer, turn: Turn | None,
                    new: list[Message]) -> AsyncIterator[str]:
    """A streamed reply's events, then ``[DONE]``. In a session the turn is stored before
    ``[DONE]`` (so a client that saw ``[DONE]`` has an acknowledged turn), and its lock is
    released whatever happens. A reply that failed ends with its error event: no ``[DONE]``,
    nothing stored."""
    try:
        async for event in answer.events:  # type: ignore[union-attr]
            yield event
        if answer.tap.failed:
            return
        if turn is not None:
            try:
                await turn.close(new, answer.tap)
            except ApiError as exc:
                yield sse(exc.body())
                return
        yield SSE_DONE
    finally:
        if turn is not None:
            await turn.close()  # no-op once closed


def _record(message: Message) -> dict[str, Any]:
    return {**message.to_openai(), "id": message.id}


def create_app(
    generator: Any = None,
    *,
    backend: Backend | None = None,
    store: Any = None,
    limits: Limits | None = None,
    default_max_tokens: int = 512,
    max_queue: int = 64,
    poll_interval: float = 0.5,
    lock_timeout: float = 30.0,
    lock_ttl: float = 10.0,
) -> Any:
    """The FastAPI app: the local ``generator`` (a :class:`~contextwindow.generation.Generator`,
    served under its ``model_id``), or a ready ``backend`` (e.g. the gateway's
    :class:`~.upstream.UpstreamBackend`: :func:`~.gateway.create_gateway` builds one).

    ``default_max_tokens`` is the reply length when a request gives none; ``max_queue`` bounds
    the local requests waiting or running (more get a 503). With a ``store``, requests that
    carry ``X-Session-Id`` are turns of a server-side session (:mod:`.sessions`). ``limits``:
    the API key, body size and nesting limits and the request timeout (:mod:`.security`).
    """
    if default_max_tokens < 1:
        raise ConfigError(f"default_max_tokens must be >= 1, not {default_max_tokens}")
    if (generator is None) == (backend is None):
        raise ConfigError("create_app needs a generator or a backend (one of them)")
    if backend is None:
        from .local import LocalBackend  # the model side, only for a local model

        backend = LocalBackend(generator, default_max_tokens=default_max_tokens,
                               max_queue=max_queue, poll_interval=poll_interval)
    counter = backend.counter
    sessions = None if store is None else Sessions(
        store, lock_timeout=lock_timeout, lock_ttl=lock_ttl,
        count=counter.count_message if counter is not None else None)
    api = ChatApi(backend, sessions=sessions, limits=limits)
    app = FastAPI(title="contextwindow", version="0.1.0", lifespan=_lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.api = api
    app.state.generator = generator
    app.state.worker = getattr(backend, "worker", None)
    # Starlette hints every handler as taking Exception, though it calls each one only with
    # the class it was registered for.
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(ContextWindowError, _library_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    app.get("/health")(api.health)
    app.get("/v1/models")(api.list_models)
    app.get("/v1/models/{model_id:path}")(api.get_model)
    # A plain Starlette route: the handler reads its Request itself, so FastAPI's per-request
    # parameter resolution would be work for nothing on the hot path.
    app.add_route("/v1/chat/completions", api.chat_completions, methods=["POST"])
    app.get("/v1/sessions/{session_id}")(api.get_session)
    app.delete("/v1/sessions/{session_id}")(api.delete_session)
    app.add_middleware(Guard, limits=api.limits)
    return app
