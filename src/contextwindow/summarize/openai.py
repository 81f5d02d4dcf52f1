"""Any OpenAI-compatible chat-completions endpoint as summarizer (:class:`OpenAISummarizer`).

``import openai`` here is absolute (the real package); it runs on first use only, so importing
:mod:`contextwindow.summarize` does not import openai.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import ConfigError, SummarizerError
from ..messages import Message
from .base import BaseSummarizer
from .prompt import DEFAULT_SYSTEM, check_prompt, clean_summary, render_prompt, render_transcript

__all__ = ["OpenAISummarizer"]


class OpenAISummarizer(BaseSummarizer):
    """Summarize with a chat-completions endpoint (OpenAI, or any OpenAI-compatible server).

    ``client`` may be an ``openai.OpenAI`` instance (e.g. with a custom ``http_client``);
    otherwise one is built from ``base_url`` and ``api_key`` on first use. A local server
    usually needs no key: with a ``base_url`` and no key a placeholder is sent. The request is
    a system message plus the rendered ``prompt``, ``temperature=0`` and ``max_tokens``.
    ``asummarize`` uses ``openai.AsyncOpenAI`` (or ``async_client``) when no sync ``client``
    was given, else the sync client in a worker thread.
    """

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 client: Any = None, prompt: str | None = None, max_tokens: int = 256, *,
                 system: str | None = DEFAULT_SYSTEM, temperature: float | None = 0.0,
                 timeout: float | None = None, async_client: Any = None) -> None:
        if not model or not isinstance(model, str):
            raise ConfigError("OpenAISummarizer needs a model name")
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, not {max_tokens}")
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.prompt = check_prompt(prompt)
        self.system = system
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout = timeout
        self._client = client
        self._async_client = async_client
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAISummarizer({self.model!r}, base_url={self.base_url!r})"

    def _client_options(self) -> dict[str, Any]:
        key = self.api_key
        if key is None and self.base_url is not None and not os.environ.get("OPENAI_API_KEY"):
            key = "not-needed"  # local OpenAI-compatible servers ignore it, the client wants one
        return {"base_url": self.base_url, "api_key": key}

    def _new_client(self, asynchronous: bool = False) -> Any:
        """An ``openai.OpenAI`` (or ``AsyncOpenAI``) for this endpoint, built the same way for
        both APIs; a ConfigError when openai rejects the options."""
        import openai

        factory = openai.AsyncOpenAI if asynchronous else openai.OpenAI
        try:
            return factory(**self._client_options())
        except openai.OpenAIError as exc:
            raise ConfigError(f"cannot create the OpenAI client: {exc}") from exc

    @contextlib.contextmanager
    def _request_errors(self) -> Iterator[None]:
        """Report an openai failure inside the block (sync or awaited request) as a
        SummarizerError, which memories know how to handle."""
        import openai

        try:
            yield
        except openai.OpenAIError as exc:
            raise SummarizerError(f"summary request to {self.model!r} failed: {exc}") from exc

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def request(self, previous: str | None, messages: Sequence[Message]) -> dict[str, Any]:
        """The keyword arguments sent to ``chat.completions.create``."""
        chat = [{"role": "system", "content": self.system}] if self.system else []
        chat.append({"role": "user",
                     "content": render_prompt(self.prompt, previous, render_transcript(messages))})
        kwargs: dict[str, Any] = {"model": self.model, "messages": chat,
                                  "max_tokens": self.max_tokens}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return kwargs

    @staticmethod
    def _reply(response: Any) -> str:
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as exc:
            raise SummarizerError(f"unexpected chat-completions reply: {exc}") from exc
        if not isinstance(content, str) or not content.strip():
            raise SummarizerError("the endpoint returned an empty summary")
        return clean_summary(content)

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        with self._request_errors():
            response = self.client.chat.completions.create(**self.request(previous, messages))
        return self._reply(response)

    async def asummarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        if self._async_client is None and self._client is not None:
            return await asyncio.to_thread(self.summarize, previous, messages)
        with self._lock:
            if self._async_client is None:
                self._async_client = self._new_client(asynchronous=True)
        with self._request_errors():
            response = await self._async_client.chat.completions.create(
                **self.request(previous, messages))
        return self._reply(response)
