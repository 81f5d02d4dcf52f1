"""An OpenAI-compatible chat-completions server that never overflows its model's window.

``create_app(generator)`` serves a local model; ``create_app(backend=UpstreamBackend(...))`` is
a gateway in front of any OpenAI-compatible server (OpenAI, vLLM, llama.cpp...). Either way:
``POST /v1/chat/completions`` (plain JSON or ``stream: true`` server-sent events),
``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``. Every request's messages are
fitted to the window by the policy (trim, sinks or none); what was left out is reported in
``usage`` (``trimmed_tokens``, ``trimmed_messages``) and in the ``X-Contextwindow-*`` headers.

With a store, a request carrying ``X-Session-Id`` is a turn of a server-side session: the client
sends only its new messages, the history is in the store (SQLite, Redis or PostgreSQL, shared
by any number of server processes, turns of one session serialised), and
``GET`` / ``DELETE /v1/sessions/{id}`` read or remove it.

Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``.

Modules: :mod:`.request` (body -> :class:`ChatRequest`), :mod:`.backend` (the interface the
routes call), :mod:`.local` and :mod:`.worker` (the local model), :mod:`.upstream`,
:mod:`.fitting` and :mod:`.cuts` (the gateway), :mod:`.sessions`, :mod:`.security` (key,
limits), :mod:`.responses` (OpenAI-shaped bodies and headers), :mod:`.app` (routes),
:mod:`.server` (uvicorn in a thread).
"""

from .app import ChatApi, create_app
from .backend import Answer, Backend, ReplyTap
from .fitting import Fitted, WindowPolicy
from .local import LocalBackend
from .request import ApiError, ChatRequest, parse_chat_request
from .responses import PROMPT_TOKENS_HEADER, TRIMMED_MESSAGES_HEADER, TRIMMED_TOKENS_HEADER
from .security import Limits, check_bind
from .server import BackgroundServer
from .sessions import SESSION_HEADER, Sessions
from .upstream import UpstreamBackend
from .worker import GenerationWorker, Job

__all__ = [
    "PROMPT_TOKENS_HEADER",
    "SESSION_HEADER",
    "TRIMMED_MESSAGES_HEADER",
    "TRIMMED_TOKENS_HEADER",
    "Answer",
    "ApiError",
    "Backend",
    "BackgroundServer",
    "ChatApi",
    "ChatRequest",
    "Fitted",
    "GenerationWorker",
    "Job",
    "Limits",
    "LocalBackend",
    "ReplyTap",
    "Sessions",
    "UpstreamBackend",
    "WindowPolicy",
    "check_bind",
    "create_app",
    "parse_chat_request",
]
