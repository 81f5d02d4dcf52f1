"""The FastAPI app: routes and error handlers only.

Parsing lives in :mod:`.request`, the generation worker in :mod:`.worker`, the response bodies
in :mod:`.responses`. The routes are methods of :class:`ChatApi`, which holds the app's state
(generator, worker, defaults), so new routes (or a gateway in front of the worker) plug in
without another closure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ConfigError
from ..generation import FitResult, Generator
from .request import ApiError, ChatRequest, parse_chat_request
from .responses import SSE_DONE, Reply, chunk, completion_body, fit_headers, sse, usage
from .worker import GenerationWorker, Job


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _error_response(exc)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = (f"Unknown request URL: {request.method} {request.url.path}."
               if exc.status_code in (404, 405) else str(exc.detail))
    return _error_response(ApiError(exc.status_code, message, code=code))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error_response(ApiError(400, str(exc), code="invalid_value"))


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.worker.close(timeout=1.0)


async def _json_body(request: Request) -> Any:
    body = await request.body()
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"We could not parse the JSON body of your request ({exc}). "
                       "The request body must be valid JSON.", code="invalid_json") from None


async def _stream(job: Job, reply: Reply, fit: FitResult,
                  include_usage: bool) -> AsyncIterator[str]:
    """The server-sent events of a streamed reply, from the job's events."""
    try:
        yield sse(chunk(reply, {"role": "assistant", "content": ""}))
        while True:
            kind, value = await job.events.get()
            if kind == "text":
                yield sse(chunk(reply, {"content": value}))
                continue
            if kind == "done":
                yield sse(chunk(reply, {}, value.finish_reason))
                if include_usage:
                    yield sse(chunk(reply, usage=usage(fit, value)))
            else:  # an error after the stream started: report it in-band, then stop
                yield sse(value.body())
            yield SSE_DONE
            return
    finally:
        job.cancel.set()  # no-op when finished; stops generation if the client left


class ChatApi:
    """The state behind the routes: one generator, its worker, and the request defaults."""

    def __init__(self, generator: Generator, worker: GenerationWorker, *,
                 default_max_tokens: int, poll_interval: float) -> None:
        self.generator = generator
        self.worker = worker
        self.default_max_tokens = default_max_tokens
        self.poll_interval = poll_interval
        self.models = (generator.model_id,)
        self.created = int(time.time())

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.generator.model_id, "queued": self.worker.pending}

    def model_card(self) -> dict[str, Any]:
        return {"id": self.generator.model_id, "object": "model", "created": self.created,
                "owned_by": "contextwindow", "context_window": self.generator.context,
                "policy": self.generator.policy}

    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self.model_card()]}

    async def get_model(self, model_id: str) -> Any:
        if model_id not in self.models:
            raise ApiError(404, f"The model `{model_id}` does not exist.", param="model",
                           code="model_not_found")
        return self.model_card()

    async def chat_completions(self, request: Request) -> Any:
        chat: ChatRequest = parse_chat_request(
            await _json_body(request), models=self.models,
            default_max_tokens=self.default_max_tokens, prepare=self.generator.prepare)
        job = self.worker.submit(chat, asyncio.get_running_loop())
        fit: FitResult = await self._next_result(job, request)
        reply = Reply.new(self.generator.model_id)
        headers = fit_headers(fit)
        if not chat.stream:
            completion = await self._next_result(job, request)
            return JSONResponse(completion_body(reply, fit, completion), headers=headers)
        return StreamingResponse(_stream(job, reply, fit, chat.include_usage),
                                 media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})

    async def _next_result(self, job: Job, request: Request) -> Any:
        """The job's next result (its fit, then its completion): an error event is raised, and
        any failure while waiting (client gone, request cancelled) cancels the job first."""
        try:
            kind, value = await self._next_event(job, request)
        except BaseException:
            job.cancel.set()
            raise
        if kind == "error":
            raise value
        return value

    async def _next_event(self, job: Job, request: Request) -> tuple[str, Any]:
        """The job's next event; cancels the job if the client went away meanwhile."""
        while True:
            try:
                return await asyncio.wait_for(job.events.get(), timeout=self.poll_interval)
            except TimeoutError:
                if await request.is_disconnected():
                    job.cancel.set()
                    raise ApiError(499, "client disconnected", type="server_error") from None


def create_app(
    generator: Generator,
    *,
    default_max_tokens: int = 512,
    max_queue: int = 64,
    poll_interval: float = 0.5,
) -> Any:
    """The FastAPI app serving ``generator`` under its ``model_id``.

    ``default_max_tokens`` is the reply length when a request gives none; ``max_queue`` bounds
    the requests waiting or running (more get a 503).
    """
    if default_max_tokens < 1:
        raise ConfigError(f"default_max_tokens must be >= 1, not {default_max_tokens}")
    worker = GenerationWorker(generator, max_queue=max_queue)
    api = ChatApi(generator, worker, default_max_tokens=default_max_tokens,
                  poll_interval=poll_interval)
    app = FastAPI(title="contextwindow", version="0.1.0", lifespan=_lifespan, docs_url=None,
                  redoc_url=None)
    app.state.generator = generator
    app.state.worker = worker
    app.state.api = api
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.get("/health")(api.health)
    app.get("/v1/models")(api.list_models)
    app.get("/v1/models/{model_id:path}")(api.get_model)
    app.post("/v1/chat/completions")(api.chat_completions)
    return app
