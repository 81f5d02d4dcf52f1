"""An OpenAI-compatible chat-completions server on a local model that never overflows its window.

``create_app(generator)`` builds a FastAPI app with ``POST /v1/chat/completions`` (plain JSON or
``stream: true`` server-sent events), ``GET /v1/models``, ``GET /v1/models/{id}`` and
``GET /health``. Every request's messages are fitted to the window by the generator's policy
before generation (see :mod:`contextwindow.generation`); what was left out is reported in
``usage`` (``trimmed_tokens``, ``trimmed_messages``) and in the ``X-Contextwindow-Trimmed-Tokens``
/ ``X-Contextwindow-Trimmed-Messages`` headers.

One model serves every request: a single worker thread takes requests from a FIFO queue and runs
them one at a time (fit, prefill, decode), so concurrent clients never share a cache or see each
other's tokens, and a greedy request gives the same text alone or under load. A client that
disconnects mid-stream cancels its generation at the next token.

Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}`` with 400 for
malformed JSON, bad fields or invalid messages, 404 for an unknown model or path, 400
``context_length_exceeded`` when the conversation cannot be fitted, 503 when the queue is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import BudgetExceededError, ConfigError, ContextWindowError, InvalidMessageError
from .generation import MAX_STOP_STRINGS, Completion, FitResult, Generator, SamplingParams
from .messages import Message, as_messages

TRIMMED_TOKENS_HEADER = "X-Contextwindow-Trimmed-Tokens"
TRIMMED_MESSAGES_HEADER = "X-Contextwindow-Trimmed-Messages"
PROMPT_TOKENS_HEADER = "X-Contextwindow-Prompt-Tokens"

# Request fields accepted but without effect on a local model (listed in docs/serve.md).
_IGNORED_FIELDS = frozenset({
    "user", "metadata", "store", "service_tier", "parallel_tool_calls", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "response_format",
    "tool_choice", "tools", "functions", "function_call", "reasoning_effort", "modalities",
    "prediction", "audio", "web_search_options", "safety_identifier", "prompt_cache_key",
    "verbosity",
})
_KNOWN_FIELDS = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
    "seed", "n", "stream", "stream_options",
}) | _IGNORED_FIELDS


class ApiError(Exception):
    """An error answered to the client as OpenAI-style JSON."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    """A validated ``POST /v1/chat/completions`` body."""

    model: str
    messages: list[Message]
    params: SamplingParams
    stream: bool = False
    include_usage: bool = False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sampling_number(payload: Mapping[str, Any], name: str, high: int) -> float:
    """``payload[name]`` checked to lie in ``[0, high]``, or OpenAI's default 1 when absent or
    null; ``temperature`` and ``top_p`` follow this one rule."""
    value = payload.get(name)
    if value is None:
        return 1.0
    if not _is_number(value) or not 0 <= value <= high:
        raise ApiError(400, f"{name} must be a number between 0 and {high}, not {value!r}",
                       param=name, code="invalid_value")
    return value


def parse_chat_request(payload: Any, *, models: tuple[str, ...], default_max_tokens: int,
                       prepare: Any = None) -> ChatRequest:
    """Validate a decoded JSON body; raise :class:`ApiError` (400 / 404) on any problem."""
    if not isinstance(payload, Mapping):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_type")
    unknown = sorted(set(payload) - _KNOWN_FIELDS)
    if unknown:
        raise ApiError(400, f"Unrecognized request argument supplied: {', '.join(unknown)}",
                       param=unknown[0], code="unknown_parameter")
    model = payload.get("model")
    if model is None:
        raise ApiError(400, "you must provide a model parameter", param="model",
                       code="missing_required_parameter")
    if not isinstance(model, str):
        raise ApiError(400, "model must be a string", param="model", code="invalid_type")
    if model not in models:
        raise ApiError(404, f"The model `{model}` does not exist. This server serves: "
                       f"{', '.join(models)}.", param="model", code="model_not_found")

    raw_messages = payload.get("messages")
    if raw_messages is None:
        raise ApiError(400, "Missing required parameter: 'messages'.", param="messages",
                       code="missing_required_parameter")
    if not isinstance(raw_messages, list):
        raise ApiError(400, "messages must be an array of message objects", param="messages",
                       code="invalid_type")
    if not raw_messages:
        raise ApiError(400, "messages must contain at least one message", param="messages",
                       code="empty_array")
    try:
        messages = prepare(raw_messages) if prepare else as_messages(raw_messages)
    except InvalidMessageError as exc:
        raise ApiError(400, f"Invalid messages: {exc}", param="messages",
                       code="invalid_value") from None

    max_tokens = payload.get("max_completion_tokens")
    param = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, param = payload.get("max_tokens"), "max_tokens"
    if max_tokens is None:
        max_tokens = default_max_tokens
    elif not _is_int(max_tokens) or max_tokens < 1:
        raise ApiError(400, f"{param} must be an integer >= 1, not {max_tokens!r}", param=param,
                       code="invalid_value")

    temperature = _sampling_number(payload, "temperature", 2)
    top_p = _sampling_number(payload, "top_p", 1)

    stop = payload.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,) if stop else ()
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if len(stop) > MAX_STOP_STRINGS:
            raise ApiError(400, f"stop may hold at most {MAX_STOP_STRINGS} strings",
                           param="stop", code="invalid_value")
        stop = tuple(s for s in stop if s)
    else:
        raise ApiError(400, "stop must be a string or an array of strings", param="stop",
                       code="invalid_type")

    seed = payload.get("seed")
    if seed is not None and not _is_int(seed):
        raise ApiError(400, f"seed must be an integer, not {seed!r}", param="seed",
                       code="invalid_type")
    n = payload.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise ApiError(400, "this server generates one choice per request (n must be 1)",
                       param="n", code="unsupported_value")
    stream = payload.get("stream")
    if stream is None:
        stream = False
    elif not isinstance(stream, bool):
        raise ApiError(400, "stream must be a boolean", param="stream", code="invalid_type")
    include_usage = False
    options = payload.get("stream_options")
    if options is not None:
        if not stream:
            raise ApiError(400, "stream_options is only allowed when stream is true",
                           param="stream_options", code="invalid_value")
        if not isinstance(options, Mapping) or not isinstance(options.get("include_usage", False),
                                                               bool):
            raise ApiError(400, "stream_options must be an object like {\"include_usage\": true}",
                           param="stream_options", code="invalid_type")
        include_usage = bool(options.get("include_usage", False))

    if payload.get("tools"):
        raise ApiError(400, "tools are not supported by this server (the local model has no "
                       "tool calling); send tool results as messages instead", param="tools",
                       code="unsupported_parameter")
    if payload.get("logprobs"):
        raise ApiError(400, "logprobs are not supported by this server", param="logprobs",
                       code="unsupported_parameter")
    for name in ("presence_penalty", "frequency_penalty"):
        value = payload.get(name)
        if value is not None and (not _is_number(value) or not -2 <= value <= 2):
            raise ApiError(400, f"{name} must be a number between -2 and 2", param=name,
                           code="invalid_value")
    response_format = payload.get("response_format")
    if response_format is not None and (not isinstance(response_format, Mapping)
                                        or response_format.get("type") != "text"):
        raise ApiError(400, "only response_format {\"type\": \"text\"} is supported",
                       param="response_format", code="unsupported_value")

    params = SamplingParams(max_tokens=max_tokens, temperature=float(temperature),
                            top_p=float(top_p), stop=stop, seed=seed)
    return ChatRequest(model=model, messages=messages, params=params, stream=stream,
                       include_usage=include_usage)


# -- the worker: one thread, one request at a time -----------------------------------------------
@dataclass
class _Job:
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

    def __init__(self, generator: Generator, *, max_queue: int = 64) -> None:
        self.generator = generator
        self.max_queue = max_queue
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
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

    def submit(self, request: ChatRequest, loop: asyncio.AbstractEventLoop) -> _Job:
        with self._count_lock:
            if self._pending >= self.max_queue:
                raise ApiError(503, f"the server is busy ({self._pending} requests queued); "
                               "retry later", type="server_error", code="server_overloaded")
            self._pending += 1
        job = _Job(request=request, loop=loop, events=asyncio.Queue())
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

    def _process(self, job: _Job) -> str:
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
        except Exception as exc:  # a bug or a broken model: report it, keep serving
            job.emit("error", ApiError(500, f"internal error while preparing the prompt: {exc}",
                                       type="server_error"))
            return "failed"
        job.emit("fit", fit)
        on_text = (lambda text: job.emit("text", text)) if request.stream else None
        try:
            completion = self.generator.generate(fit, request.params, on_text=on_text,
                                                 cancel=job.cancel)
        except Exception as exc:
            job.emit("error", ApiError(500, f"generation failed: {exc}", type="server_error"))
            return "failed"
        job.emit("done", completion)
        return "cancelled" if completion.finish_reason == "cancelled" else "completed"


# -- responses ----------------------------------------------------------------------------------
def _usage(fit: FitResult, completion: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": fit.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": fit.prompt_tokens + completion.completion_tokens,
        "trimmed_tokens": fit.trimmed_tokens,
        "trimmed_messages": fit.trimmed_messages,
        "context_window": fit.budget + fit.reserve,
        "kv_cache_tokens": completion.kv_cache_tokens,
        "kv_evicted_tokens": completion.kv_evicted_tokens,
    }


def _fit_headers(fit: FitResult) -> dict[str, str]:
    return {TRIMMED_TOKENS_HEADER: str(fit.trimmed_tokens),
            TRIMMED_MESSAGES_HEADER: str(fit.trimmed_messages),
            PROMPT_TOKENS_HEADER: str(fit.prompt_tokens)}


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


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
    models = (generator.model_id,)
    created = int(time.time())
    worker = GenerationWorker(generator, max_queue=max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        worker.close(timeout=1.0)

    app = FastAPI(title="contextwindow", version="0.1.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.generator = generator
    app.state.worker = worker

    def error_response(error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = (f"Unknown request URL: {request.method} {request.url.path}."
                   if exc.status_code in (404, 405) else str(exc.detail))
        return error_response(ApiError(exc.status_code, message, code=code))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(ApiError(400, str(exc), code="invalid_value"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": generator.model_id, "queued": worker.pending}

    def model_card() -> dict[str, Any]:
        return {"id": generator.model_id, "object": "model", "created": created,
                "owned_by": "contextwindow", "context_window": generator.context,
                "policy": generator.policy}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> Any:
        if model_id not in models:
            raise ApiError(404, f"The model `{model_id}` does not exist.", param="model",
                           code="model_not_found")
        return model_card()

    async def next_event(job: _Job, request: Request) -> tuple[str, Any]:
        """The job's next event; cancels the job if the client went away meanwhile."""
        while True:
            try:
                return await asyncio.wait_for(job.events.get(), timeout=poll_interval)
            except TimeoutError:
                if await request.is_disconnected():
                    job.cancel.set()
                    raise ApiError(499, "client disconnected", type="server_error") from None

    async def next_result(job: _Job, request: Request) -> Any:
        """The job's next result (its fit, then its completion): an error event is raised, and
        any failure while waiting (client gone, request cancelled) cancels the job first."""
        try:
            kind, value = await next_event(job, request)
        except BaseException:
            job.cancel.set()
            raise
        if kind == "error":
            raise value
        return value

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body = await request.body()
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"We could not parse the JSON body of your request ({exc}). "
                           "The request body must be valid JSON.", code="invalid_json") from None
        chat = parse_chat_request(payload, models=models, default_max_tokens=default_max_tokens,
                                  prepare=generator.prepare)
        job = worker.submit(chat, asyncio.get_running_loop())
        fit: FitResult = await next_result(job, request)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        stamp = int(time.time())
        headers = _fit_headers(fit)

        if not chat.stream:
            completion: Completion = await next_result(job, request)
            return JSONResponse({
                "id": completion_id,
                "object": "chat.completion",
                "created": stamp,
                "model": generator.model_id,
                "system_fingerprint": None,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text,
                                "refusal": None},
                    "logprobs": None,
                    "finish_reason": completion.finish_reason,
                }],
                "usage": _usage(fit, completion),
            }, headers=headers)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": stamp,
                    "model": generator.model_id, "system_fingerprint": None,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}]}

        async def events() -> AsyncIterator[str]:
            try:
                yield _sse(chunk({"role": "assistant", "content": ""}))
                while True:
                    kind, value = await job.events.get()
                    if kind == "text":
                        yield _sse(chunk({"content": value}))
                    elif kind == "done":
                        yield _sse(chunk({}, value.finish_reason))
                        if chat.include_usage:
                            yield _sse({"id": completion_id, "object": "chat.completion.chunk",
                                        "created": stamp, "model": generator.model_id,
                                        "system_fingerprint": None, "choices": [],
                                        "usage": _usage(fit, value)})
                        yield "data: [DONE]\n\n"
                        return
                    else:  # an error after the stream started: report it in-band, then stop
                        yield _sse(value.body())
                        yield "data: [DONE]\n\n"
                        return
            finally:
                job.cancel.set()  # no-op when finished; stops generation if the client left

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})

    return app


# -- running ------------------------------------------------------------------------------------
class BackgroundServer:
    """Serve an app with uvicorn on a free loopback port in a daemon thread (tests, benchmarks).

    Use as a context manager, or call :meth:`start` / :meth:`stop`. ``url`` is the API base
    (``http://127.0.0.1:PORT/v1``), ready for ``openai.OpenAI(base_url=server.url)``.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning") -> None:
        import uvicorn

        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(app, log_level=log_level, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]},
                                        name="contextwindow-uvicorn", daemon=True)

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
