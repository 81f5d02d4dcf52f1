"""A backend that forwards to any OpenAI-compatible server, each request fitted to its window.

The upstream (OpenAI, vLLM, llama.cpp's server, another ``contextwindow serve``) runs the model;
this side counts, trims and forwards. Requests go out on one ``aiohttp.ClientSession`` (pooled
connections; per forwarded request it costs about a third of httpx's CPU, docs/serve.md). What
can go wrong upstream reaches the client in OpenAI's error shape:

| upstream | client gets |
| --- | --- |
| connection refused / reset, bad reply | 502 ``upstream_unavailable`` / ``upstream_error`` |
| connect, read or pool timeout | 504 ``upstream_timeout`` |
| 429 or 5xx | the same status, message and ``Retry-After`` |
| 401 / 403 (the gateway's upstream key) | 502 ``upstream_auth_failed`` (not the client's fault) |
| other 4xx | the same status and error body |

A client that disconnects cancels its upstream request (the connection is closed, which is how
OpenAI-compatible servers learn of it). A stream that ends (``[DONE]`` or end of body) before
any ``finish_reason`` was cut short upstream (llama.cpp's server interrupts a running stream
when another request arrives): the client gets a 502 ``upstream_incomplete`` error event, never
``[DONE]``, and a session stores nothing. A streaming client that asked for
``stream_options.include_usage`` gets a usage chunk even from an engine that sends none: the
prompt tokens are the gateway's own count, the completion tokens its count of the reply.
Every upstream failure is logged (``contextwindow.serve``, warning). ``flatten`` sends what was
counted to engines that accept only plain chat (:func:`flattened`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from yarl import URL

from ..adapters import as_messages
from ..errors import BudgetExceededError, ContextWindowError
from ..messages import Message
from ..tokens import TokenCounter
from ..window import Fitted, Fitter
from .protocol import (
    Answer,
    ApiError,
    ChatRequest,
    Disconnected,
    ReplyTap,
    fit_headers,
    sse,
    until_disconnected,
)
from .request import parse_chat_request

log = logging.getLogger("contextwindow.serve")
PASSED_ON = frozenset({429, 500, 502, 503, 504})
INLINE_FIT_CHARS = 20_000
"""Requests with less new text than this are fitted on the event loop (about a millisecond);
longer ones in a thread, so a big request does not stall the others. A window whose fit may
wait on a model (``Fitter.may_block``: an upstream summary) always fits in a thread."""
FIT_THREADS = 32
"""Fits at once in threads: their own pool, so fits waiting on a slow summary model do not
hold the threads the rest of the process shares."""
HEALTH_TIMEOUT = 5.0
"""Seconds ``GET /health`` waits for the upstream's ``GET /models``."""
ENCODED_MESSAGES = 1 << 16
"""Messages whose JSON a backend keeps: a session's window is sent again on every turn."""


class UpstreamBackend:
    """Answers through ``base_url`` (e.g. ``http://vllm:8000/v1``) as ``upstream_model``.

    Clients name the model ``served_model`` (default: ``upstream_model``). ``window`` fits
    each request; ``default_max_tokens`` is the reply reserve (and the ``max_tokens`` sent)
    when a request sets none, so prompt plus reply always fit the upstream's window.
    ``max_queue`` bounds the requests in flight (more get 503 ``server_overloaded``);
    ``flatten`` sends messages as :func:`flattened` (engines without ``developer`` or parts).
    """

    def __init__(self, base_url: str, *, upstream_model: str, window: Fitter,
                 api_key: str | None = None, served_model: str | None = None,
                 default_max_tokens: int = 512, timeout: float = 600.0,
                 connect_timeout: float = 10.0, max_queue: int = 64,
                 flatten: bool = False) -> None:
        self.upstream_model = upstream_model
        self.model_id = served_model or upstream_model
        self.fitter = window
        self.counter: TokenCounter = window.counter
        self.window = window.context
        self.default_max_tokens = default_max_tokens
        self.max_queue = max_queue
        self.flatten = flatten
        self._in_flight = 0
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        # A read timeout per socket read (a stream may run long while tokens keep coming).
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout,
                                              sock_read=timeout)
        self._http: aiohttp.ClientSession | None = None
        base = URL(base_url.rstrip("/") + "/")
        self._chat_url, self._models_url = base.join(URL("chat/completions")), base.join(
            URL("models"))
        self.where = _redacted(base_url)
        self._fit_threads = ThreadPoolExecutor(FIT_THREADS, thread_name_prefix="contextwindow-fit")
        self._encoded = functools.lru_cache(maxsize=ENCODED_MESSAGES)(_encoded)

    # -- the Backend interface ------------------------------------------------------------------
    def parse(self, payload: Any) -> ChatRequest:
        return parse_chat_request(payload, models=(self.model_id,), forward=True,
                                  default_max_tokens=self.default_max_tokens,
                                  prepare=self._prepare)

    async def answer(self, chat: ChatRequest, disconnected: Disconnected) -> Answer:
        """Admit, fit, forward, reply: the request's steps, in order. A request holds its place
        in ``max_queue`` until its body is read or its stream is closed."""
        if self._in_flight >= self.max_queue:
            raise ApiError(503, f"the server is busy ({self._in_flight} requests in flight); "
                           "retry later", type="server_error", code="server_overloaded",
                           headers={"Retry-After": "1"})
        self._in_flight += 1
        try:
            fitted = await self._fitted(chat, disconnected)
            response, body = await until_disconnected(self._exchange(chat, fitted),
                                                      disconnected)
            answer = self._reply(chat, fitted, response, body)
        except BaseException:
            self._in_flight -= 1
            raise
        if answer.close is None:
            self._in_flight -= 1
            return answer
        return dataclasses.replace(answer, close=self._releasing(answer.close))

    async def models(self) -> dict[str, Any]:
        response = await self._send("GET", self._models_url)
        listed = (await self._json(response)).get("data") or []
        found = next((m for m in listed if isinstance(m, dict)
                      and m.get("id") == self.upstream_model), {})
        return {"object": "list", "data": [{**found, **self.card()}]}

    def card(self) -> dict[str, Any]:
        return {"id": self.model_id, "object": "model", "owned_by": "contextwindow",
                "created": 0, "context_window": self.window, "policy": self.fitter.policy,
                "upstream": self.where}

    async def health(self) -> dict[str, Any]:
        """Ok when the upstream lists its models, else 503 ``upstream_unavailable``."""
        try:
            async with self._client().get(self._models_url, timeout=aiohttp.ClientTimeout(
                    total=HEALTH_TIMEOUT)) as response:
                reason = f"HTTP {response.status}" if response.status >= 400 else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = type(exc).__name__
        if reason is not None:
            log.warning("health: the upstream %s is unavailable (%s)", self.where, reason)
            raise ApiError(503, f"the upstream {self.where} is unavailable ({reason})",
                           type="server_error", code="upstream_unavailable")
        return {"status": "ok", "model": self.model_id, "upstream": self.where,
                "in_flight": self._in_flight}

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._fit_threads.shutdown(wait=False, cancel_futures=True)

    # -- the steps of one answer ----------------------------------------------------------------
    def _prepare(self, raw: list[Any]) -> list[Message]:
        messages = as_messages(raw)
        return [flattened(m) for m in messages] if self.flatten else messages

    def _releasing(self, close: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
        """``close`` that also gives back the stream's place in ``max_queue`` (once)."""
        released = False

        async def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._in_flight -= 1
            await close()
        return release

    async def _fitted(self, chat: ChatRequest, disconnected: Disconnected) -> Fitted:
        """The request fitted to the window: on the event loop when that is quick, else in a
        thread (a long count, or a summary from a model, never runs on the event loop)."""
        uncounted = sum(len(m.content or "") for m in chat.messages[chat.counted[0]:])
        if uncounted < INLINE_FIT_CHARS and not self.fitter.may_block:
            return self._fit(chat)  # a thread hop costs more
        return await until_disconnected(self._fit_in_thread(chat), disconnected)

    def _body(self, chat: ChatRequest, fitted: Fitted) -> bytes:
        """The upstream request's body: the client's with the fitted messages and our model.
        Each message is encoded once (memoised by content) and spliced into the body: a
        session's window is mostly the messages of its previous turn."""
        fields = {**chat.extra, "model": self.upstream_model}
        if "max_tokens" not in fields and "max_completion_tokens" not in fields:
            fields["max_tokens"] = chat.params.max_tokens
        head = _json_text(fields)
        messages = ",".join(map(self._encoded, fitted.messages))
        return f'{head[:-1]},"messages":[{messages}]}}'.encode("ascii")

    async def _exchange(self, chat: ChatRequest, fitted: Fitted
                        ) -> tuple[aiohttp.ClientResponse, dict[str, Any] | None]:
        """The upstream's response and, unless it streams, its JSON body: one awaitable, so a
        request watches for its client's disconnect once, not per step."""
        response = await self._send("POST", self._chat_url, self._body(chat, fitted))
        return response, None if chat.stream else await self._json(response)

    def _reply(self, chat: ChatRequest, fitted: Fitted, response: aiohttp.ClientResponse,
               reply: dict[str, Any] | None) -> Answer:
        """The upstream's reply passed on under our model name, with the fit in its usage and
        headers, and tapped for the session."""
        tap, headers = ReplyTap(), fit_headers(fitted)
        if reply is None:
            return Answer(headers, tap, events=self._events(response, tap, chat, fitted),
                          close=functools.partial(_closed, response))
        choice = (reply.get("choices") or [{}])[0]
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            tap.feed_message(choice["message"], choice.get("finish_reason"))
        if isinstance(reply.get("usage"), dict):
            reply["usage"].update(_usage_extra(fitted))
        reply["model"] = self.model_id
        return Answer(headers, tap, body=reply)

    # -- plumbing -------------------------------------------------------------------------------
    async def _fit_in_thread(self, chat: ChatRequest) -> Fitted:
        return await asyncio.get_running_loop().run_in_executor(self._fit_threads, self._fit,
                                                                chat)

    def _fit(self, chat: ChatRequest) -> Fitted:
        try:
            tools = chat.extra.get("tools")
            return self.fitter.fit(chat.messages, chat.params.max_tokens, counted=chat.counted,
                                   tools=tools if isinstance(tools, list) and tools else None,
                                   rank=chat.rank)
        except BudgetExceededError as exc:
            raise ApiError(400, str(exc), param="messages",
                           code="context_length_exceeded") from None
        except ContextWindowError as exc:
            raise ApiError(400, f"Invalid messages: {exc}", param="messages",
                           code="invalid_value") from None

    def _client(self) -> aiohttp.ClientSession:
        """The pooled session, made on first use: aiohttp binds it to the running loop."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=0))
        return self._http

    async def _send(self, method: str, url: URL, body: bytes | None = None
                    ) -> aiohttp.ClientResponse:
        """The upstream's response (its body still to read), or the mapped ApiError. Cancelled
        (the client went away), the request's connection is closed."""
        headers = None if body is None else {"content-type": "application/json"}
        try:
            response = await self._client().request(method, url, data=body, headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _logged(_transport_error(exc, self.where)) from None
        if response.status >= 400:
            error = _status_error(response, await self._read(response), self.where)
            raise _logged(error) if error.status >= 500 else error
        return response

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body, the response closed either way; a broken transfer is mapped."""
        try:
            return await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _logged(_transport_error(exc, self.where)) from None
        finally:
            response.release()  # a body not read to its end closes the connection

    async def _json(self, response: aiohttp.ClientResponse) -> dict[str, Any]:
        raw = await self._read(response)
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise ApiError(502, f"the upstream {self.where} answered something that is not a "
                           "JSON object", type="server_error", code="upstream_error")
        return reply

    async def _events(self, response: aiohttp.ClientResponse, tap: ReplyTap, chat: ChatRequest,
                      fitted: Fitted) -> Any:
        """The upstream's events, passed on as they come (the usage chunk gains the fit); a
        stream cut short ends in an error event, and a usage chunk the upstream owed is
        added."""
        envelope: dict[str, Any] = {}
        usage_sent = False
        try:
            async for line in _lines(response):
                data = line[5:].strip() if line.startswith("data:") else None
                if data is None or not data:
                    continue
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    chunk = None
                if not isinstance(chunk, dict):
                    yield f"data: {data}\n\n"
                    continue
                tap.feed_chunk(chunk)
                envelope = envelope or {k: chunk[k] for k in ("id", "created") if k in chunk}
                chunk["model"] = self.model_id
                if isinstance(chunk.get("usage"), dict):
                    chunk["usage"].update(_usage_extra(fitted))
                    usage_sent = True
                yield sse(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            tap.failed = True
            yield sse(_logged(_transport_error(exc, self.where)).body())
            return
        finally:
            response.release()
        if tap.finish is None:
            tap.failed = True
            yield sse(_logged(ApiError(
                502, f"the upstream {self.where} ended the stream before the reply finished "
                "(no finish_reason)", type="server_error", code="upstream_incomplete")).body())
        elif chat.include_usage and not usage_sent:
            yield sse({**envelope, "object": "chat.completion.chunk", "model": self.model_id,
                       "choices": [], "usage": self._usage(tap, fitted)})

    def _usage(self, tap: ReplyTap, fitted: Fitted) -> dict[str, int]:
        """The usage of a reply the upstream did not report: the prompt as the gateway counted
        it, the reply's text and tool calls by the same counter."""
        reply = "".join(tap.text) + "".join(c["name"] + c["arguments"]
                                            for c in tap.tool_calls.values())
        completion = self.counter.count_text(reply)
        return {"prompt_tokens": fitted.prompt_tokens, "completion_tokens": completion,
                "total_tokens": fitted.prompt_tokens + completion, **_usage_extra(fitted)}


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The body's lines as they arrive (``\\n`` or ``\\r\\n``), any length: an SSE event
    may carry a long tool-call argument, past aiohttp's own line limit."""
    pending = b""
    async for chunk in response.content.iter_any():
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r").decode("utf-8", "replace")
    if pending:
        yield pending.removesuffix(b"\r").decode("utf-8", "replace")


async def _closed(response: aiohttp.ClientResponse) -> None:
    """A stream's end, however it came: an unfinished body closes its connection, which is
    how the upstream learns the client has gone."""
    response.release()


def _json_text(value: Any) -> str:
    """Compact ASCII JSON, as every upstream body is sent."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def _encoded(message: Message) -> str:
    """One message of an upstream body (:meth:`UpstreamBackend._body`)."""
    return _json_text(message.to_openai())


def flattened(message: Message) -> Message:
    """``message`` as engines with only plain chat templates accept it (llama.cpp answers 500
    otherwise): a ``developer`` message as ``system``, a list of text parts as their joined
    text, a null content (an assistant's tool calls) as ``""``: what the counter priced.
    Other parts (images) stay as given."""
    role = "system" if message.role == "developer" else message.role
    parts = message.content_parts
    text_only = parts is not None and all(isinstance(p, str) or p.get("type") == "text"
                                          for p in parts)
    if role == message.role and not text_only and (message.content is not None or parts):
        return message
    return dataclasses.replace(message, role=role, content=message.content or "",
                               parts=None if text_only else message.parts)


def _logged(error: ApiError) -> ApiError:
    """``error``, logged: what went wrong upstream is the operator's to see."""
    log.warning("%s %s", error.code or error.status, error.message)
    return error


def _usage_extra(fitted: Fitted) -> dict[str, int]:
    return {"trimmed_tokens": fitted.trimmed_tokens, "trimmed_messages": fitted.trimmed_messages,
            "context_window": fitted.budget + fitted.reserve}


def _redacted(url: str) -> str:
    """``url`` without credentials or query (what may be shown and logged)."""
    return str(URL(url).with_user(None).with_query(None).with_fragment(None))


def _transport_error(exc: aiohttp.ClientError | TimeoutError, where: str) -> ApiError:
    if isinstance(exc, TimeoutError):  # aiohttp's connect and read timeouts are TimeoutErrors
        return ApiError(504, f"the upstream {where} did not answer in time "
                        f"({type(exc).__name__})", type="server_error", code="upstream_timeout")
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        # refused, reset, or gone in the middle of a body
        return ApiError(502, f"cannot reach the upstream {where} ({type(exc).__name__})",
                        type="server_error", code="upstream_unavailable")
    return ApiError(502, f"the upstream {where} failed ({type(exc).__name__})",
                    type="server_error", code="upstream_error")


def _status_error(response: aiohttp.ClientResponse, raw: bytes, where: str) -> ApiError:
    status = response.status
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        text = raw.decode("utf-8", "replace")[:300]
        error = {"message": f"the upstream {where} answered {status}: {text}"}
    if status in (401, 403):
        return ApiError(502, f"the upstream {where} refused the gateway's credentials "
                        f"({status}); check its API key", type="server_error",
                        code="upstream_auth_failed")
    if status >= 500 and status not in PASSED_ON:
        status = 502
    headers = {"Retry-After": response.headers["retry-after"]} if (
        "retry-after" in response.headers) else {}
    return ApiError(status, str(error.get("message") or f"upstream error {status}"),
                    type=str(error.get("type") or ("server_error" if status >= 500
                                                   else "invalid_request_error")),
                    param=error.get("param") if isinstance(error.get("param"), str) else None,
                    code=error.get("code") if isinstance(error.get("code"), str) else None,
                    headers=headers)

