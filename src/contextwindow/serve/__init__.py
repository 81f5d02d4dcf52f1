"""An OpenAI-compatible chat-completions server on a local model that never overflows its window.

``create_app(generator)`` builds a FastAPI app with ``POST /v1/chat/completions`` (plain JSON or
``stream: true`` server-sent events), ``GET /v1/models``, ``GET /v1/models/{id}`` and
``GET /health``. Every request's messages are fitted to the window by the generator's policy
before generation (see :mod:`contextwindow.generation`); what was left out is reported in
``usage`` (``trimmed_tokens``, ``trimmed_messages``) and in the ``X-Contextwindow-Trimmed-Tokens``
/ ``X-Contextwindow-Trimmed-Messages`` headers.

One model serves every request: a single worker thread takes requests from a FIFO queue and runs
them one at a time (:mod:`.worker`). A client that disconnects mid-stream cancels its generation
at the next token.

Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}`` with 400 for
malformed JSON, bad fields or invalid messages, 404 for an unknown model or path, 400
``context_length_exceeded`` when the conversation cannot be fitted, 503 when the queue is full.

Modules: :mod:`.request` (body -> :class:`ChatRequest`), :mod:`.worker`, :mod:`.responses`
(OpenAI-shaped bodies and headers), :mod:`.app` (routes), :mod:`.server` (uvicorn in a thread).
"""

from .app import ChatApi, create_app
from .request import ApiError, ChatRequest, parse_chat_request
from .responses import PROMPT_TOKENS_HEADER, TRIMMED_MESSAGES_HEADER, TRIMMED_TOKENS_HEADER
from .server import BackgroundServer
from .worker import GenerationWorker, Job

__all__ = [
    "PROMPT_TOKENS_HEADER",
    "TRIMMED_MESSAGES_HEADER",
    "TRIMMED_TOKENS_HEADER",
    "ApiError",
    "BackgroundServer",
    "ChatApi",
    "ChatRequest",
    "GenerationWorker",
    "Job",
    "create_app",
    "parse_chat_request",
]
