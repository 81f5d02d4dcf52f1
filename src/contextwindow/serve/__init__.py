"""An OpenAI-compatible chat-completions server that never overflows its model's window.

``create_app(generator)`` serves a local model; ``create_gateway(url, model=..., context=...)``
is a gateway in front of any OpenAI-compatible server (OpenAI, vLLM, llama.cpp...). Either way:
``POST /v1/chat/completions`` (plain JSON or ``stream: true`` server-sent events),
``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``. Every request's messages are
fitted to the window by the overflow mode (trim, sinks, summary or none); what was left out
is reported in ``usage`` (``trimmed_tokens``, ``trimmed_messages``) and in the
``X-Contextwindow-*`` headers.

With a store, a request carrying ``X-Session-Id`` is a turn of a server-side session: the client
sends only its new messages, the history is in the store (SQLite, Redis or PostgreSQL, shared
by any number of server processes, turns of one session serialised), and
``GET`` / ``DELETE /v1/sessions/{id}`` read or remove it.

Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``.

Modules, in the order a request meets them: :mod:`.app` (routes), :mod:`.security` (key,
limits), :mod:`.request` (body -> ``ChatRequest``), :mod:`.sessions` (the turn of a
session), then the backend: :mod:`.local` and :mod:`._worker` (the local model) or
:mod:`.upstream` (the gateway's upstream; its fit is :mod:`contextwindow.window`).
:mod:`.protocol` holds the types they share (request, answer, reply tap, errors, headers,
SSE); :mod:`.gateway` assembles a gateway (:func:`create_gateway`); :mod:`.server` runs an
app with uvicorn in a thread.

The API is ``__all__``: the two app factories, the :class:`Limits` they take, the local
backend, and :func:`check_bind` (no public bind without an API key) to run before serving. The
other names below stay importable from here for code written against earlier releases; their
homes are the modules that define them.
"""

from typing import Any

from .app import create_app
from .gateway import create_gateway
from .security import Limits, check_bind

__all__ = ["Limits", "LocalBackend", "check_bind", "create_app", "create_gateway"]

# Kept importable from here (earlier releases listed them); not the API.
from ..window import Fitted  # noqa: F401
from .app import ChatApi  # noqa: F401
from .gateway import WindowPolicy, window_policy  # noqa: F401
from .protocol import (  # noqa: F401
    PROMPT_TOKENS_HEADER,
    TRIMMED_MESSAGES_HEADER,
    TRIMMED_TOKENS_HEADER,
    Answer,
    ApiError,
    Backend,
    ChatRequest,
    ReplyTap,
)
from .request import parse_chat_request  # noqa: F401
from .server import BackgroundServer  # noqa: F401
from .sessions import SESSION_HEADER, Sessions  # noqa: F401
from .upstream import UpstreamBackend  # noqa: F401


def __getattr__(name: str) -> Any:
    """The local engine (``LocalBackend``, ``GenerationWorker``, ``Job``) loads on first use:
    a gateway never imports the model side."""
    if name == "LocalBackend":
        from .local import LocalBackend

        return LocalBackend
    if name in ("GenerationWorker", "Job"):
        from . import _worker

        return getattr(_worker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
