"""Summarizers: turn a previous summary plus the messages being folded into a new summary.

A summarizer is anything with ``summarize(previous, messages) -> str`` (the :class:`Summarizer`
protocol): ``previous`` is the running summary so far (``None`` at first), ``messages`` the
oldest turns that are leaving the verbatim context. Summary memories call it only when their
budget is exceeded (see :class:`contextwindow.memory.SummaryBufferMemory`).

Implementations:

* :class:`TransformersSummarizer` -- a local instruct model through its chat template (the
  default local SmolLM2-135M-Instruct, loaded on first use; greedy decoding).
* :class:`OpenAISummarizer` -- any OpenAI-compatible chat-completions endpoint.
* :class:`KeyFactsSummarizer` -- no model: carries names, numbers, dates, codes and quoted
  strings verbatim into a compact facts block. Deterministic and fast.
* :class:`CombinedSummarizer` -- a model summary followed by the facts block.
* :class:`FunctionSummarizer` -- adapts a plain (sync or async) function.

Every summarizer also has ``asummarize`` (async). :func:`run_summarizer` and
:func:`arun_summarizer` add a timeout and turn any failure into
:class:`~contextwindow.errors.SummarizerError`. Importing this module does not import torch or
openai; they are imported when a summarizer that needs them is first used.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigError, SummarizerError
from .messages import Message

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_SYSTEM",
    "BaseSummarizer",
    "CombinedSummarizer",
    "FunctionSummarizer",
    "KeyFactsSummarizer",
    "OpenAISummarizer",
    "Summarizer",
    "SummarizerWarning",
    "TransformersSummarizer",
    "arun_summarizer",
    "clean_summary",
    "drop_oldest_facts",
    "extract_facts",
    "render_prompt",
    "render_transcript",
    "run_summarizer",
    "split_sentences",
]

DEFAULT_SYSTEM = "You are a careful note-taker."

#: The default instruction. ``{previous}`` is replaced by the running summary (or "(none)"),
#: ``{lines}`` by the transcript of the messages being folded. Pass your own to a summarizer's
#: ``prompt=``; it must contain ``{lines}``. Written for small local models too: a bullet-list
#: "notes" task after the material works better for them than a free-form summary.
DEFAULT_PROMPT = (
    "Previous notes: {previous}\n\n"
    "New messages:\n{lines}\n\n"
    "Write the important facts from the previous notes and the new messages as a bullet list. "
    "Copy every name, number, date, amount, code, decision and open task exactly as written."
)


class SummarizerWarning(UserWarning):
    """Emitted when a summary memory falls back to trimming because its summarizer failed."""


@runtime_checkable
class Summarizer(Protocol):
    """What a summary memory needs: previous summary + messages being folded -> new summary.

    The result replaces ``previous`` entirely, so it must carry forward whatever of
    ``previous`` is still worth keeping (a *progressive* summary). An async variant,
    ``asummarize``, is optional: :func:`arun_summarizer` runs ``summarize`` in a worker thread
    when it is missing.
    """

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str: ...


class BaseSummarizer:
    """Convenience base: ``asummarize`` runs ``summarize`` in a worker thread."""

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        raise NotImplementedError

    async def asummarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        return await asyncio.to_thread(self.summarize, previous, messages)


# ---------------------------------------------------------------------------------------------
# Transcript and prompt rendering


def _speaker(message: Message) -> str:
    role = {"user": "User", "assistant": "Assistant", "tool": "Tool result",
            "system": "System", "developer": "Developer"}[message.role]
    return f"{role} ({message.name})" if message.name else role


def render_transcript(messages: Sequence[Message]) -> list[str]:
    """One line per message (one per tool call), as the summarizers' prompts show them."""
    lines = []
    for message in messages:
        if message.content:
            lines.append(f"{_speaker(message)}: {' '.join(message.content.split())}")
        for call in message.tool_calls:
            lines.append(f"{_speaker(message)} called {call.name}({call.arguments})")
    return lines


def render_prompt(prompt: str, previous: str | None, lines: Sequence[str]) -> str:
    """Fill ``{previous}`` and ``{lines}`` (plain replacement: braces in the chat are safe)."""
    return (prompt.replace("{previous}", previous.strip() if previous else "(none)")
            .replace("{lines}", "\n".join(lines)))


def _check_prompt(prompt: str | None) -> str:
    prompt = DEFAULT_PROMPT if prompt is None else prompt
    if not isinstance(prompt, str) or "{lines}" not in prompt:
        raise ConfigError("a summarizer prompt must be a string containing {lines} "
                          "(and usually {previous})")
    return prompt


_LABEL = re.compile(r"^\s*(?:\*\*)?(?:updated |new |running )?(?:summary|notes)(?:\*\*)?\s*:\s*",
                    re.IGNORECASE)
# A first line that only announces what follows ("Here are the notes:", "The following...:").
_PREAMBLE = re.compile(r"^\s*(?:here (?:is|are)|sure|okay|certainly|the following)\b[^\n]*:\s*\n",
                       re.IGNORECASE)
# A phrase of up to six words said three or more times in a row ("User: User: User:") is kept
# once: the loop a small model falls into under greedy decoding.
_STUTTER = re.compile(r"(?<!\S)(\S+(?:[ \t]+\S+){0,5}?)(?:[ \t]+\1(?=\s|$)){2,}")
_EMPTY_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])?\s*$|^\s*\*\*[^*]+:?\*\*:?\s*$")


def clean_summary(text: str) -> str:
    """Strip a leading "Here are the notes:" or "Summary:" label, heading-only and empty
    bullet lines, and sentences a small model repeats verbatim."""
    text = _LABEL.sub("", _PREAMBLE.sub("", text.strip() + "\n", count=1).strip())
    text = _STUTTER.sub(r"\1", text)
    text = "\n".join(line for line in text.splitlines() if not _EMPTY_LINE.match(line))
    seen: set[str] = set()
    out_lines = []
    for line in text.splitlines():
        kept = []
        for sentence in re.split(r"(?<=[.!?])\s+", line.strip()):
            key = " ".join(sentence.lower().split())
            if key and key in seen:
                continue
            seen.add(key)
            kept.append(sentence)
        joined = " ".join(s for s in kept if s)
        if joined or (out_lines and out_lines[-1]):
            out_lines.append(joined)
    return "\n".join(out_lines).strip()


# ---------------------------------------------------------------------------------------------
# Running a summarizer: timeout, validation, one error type


def _validate(result: Any, summarizer: Any) -> str:
    if not isinstance(result, str):
        raise SummarizerError(f"{type(summarizer).__name__} returned "
                              f"{type(result).__name__}, not a string")
    if not result.strip():
        raise SummarizerError(f"{type(summarizer).__name__} returned an empty summary")
    return result.strip()


def _crashed(summarizer: Summarizer, exc: BaseException) -> SummarizerError:
    """A summarizer's unexpected error as the SummarizerError memories handle, worded the same
    whichever way (sync, threaded, async) the summarizer was called."""
    return SummarizerError(f"{type(summarizer).__name__} failed: {type(exc).__name__}: {exc}")


def _timed_out(summarizer: Summarizer, timeout: float) -> SummarizerError:
    return SummarizerError(f"{type(summarizer).__name__} timed out after {timeout:g} s")


def run_summarizer(summarizer: Summarizer, previous: str | None, messages: Sequence[Message],
                   *, timeout: float | None = None) -> str:
    """Call ``summarizer.summarize``; any exception, a non-string or empty result, or running
    longer than ``timeout`` seconds becomes :class:`SummarizerError`.

    With a timeout the call runs in a daemon thread; Python cannot interrupt a running thread,
    so on timeout that call finishes in the background and its result is discarded.
    """
    if timeout is None:
        try:
            result = summarizer.summarize(previous, messages)
        except SummarizerError:
            raise
        except Exception as exc:
            raise _crashed(summarizer, exc) from exc
        return _validate(result, summarizer)
    if timeout <= 0:
        raise ConfigError(f"timeout must be positive, not {timeout}")
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = summarizer.summarize(previous, messages)
        except BaseException as exc:  # reported to the caller below
            box["error"] = exc

    worker = threading.Thread(target=target, name="contextwindow-summarizer", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise _timed_out(summarizer, timeout)
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, SummarizerError):
            raise exc
        raise _crashed(summarizer, exc) from exc
    return _validate(box.get("result"), summarizer)


async def arun_summarizer(summarizer: Summarizer, previous: str | None,
                          messages: Sequence[Message], *, timeout: float | None = None) -> str:
    """Async :func:`run_summarizer`: awaits ``asummarize`` if the summarizer has one, else runs
    ``summarize`` in a worker thread."""
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be positive, not {timeout}")
    method = getattr(summarizer, "asummarize", None)
    if method is not None:
        call: Awaitable[Any] = method(previous, messages)
    else:
        call = asyncio.to_thread(summarizer.summarize, previous, messages)
    try:
        result = await asyncio.wait_for(call, timeout)
    except asyncio.TimeoutError:
        raise _timed_out(summarizer, timeout) from None
    except SummarizerError:
        raise
    except Exception as exc:
        raise _crashed(summarizer, exc) from exc
    return _validate(result, summarizer)


class FunctionSummarizer(BaseSummarizer):
    """Adapt a function ``fn(previous, messages) -> str`` (sync or ``async def``)."""

    def __init__(self, fn: Callable[[str | None, Sequence[Message]], Any]) -> None:
        if not callable(fn):
            raise ConfigError("FunctionSummarizer needs a callable")
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        if self.is_async:
            return asyncio.run(self.fn(previous, messages))
        return self.fn(previous, messages)

    async def asummarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        if self.is_async:
            return await self.fn(previous, messages)
        return await asyncio.to_thread(self.fn, previous, messages)

    def __repr__(self) -> str:
        return f"FunctionSummarizer({getattr(self.fn, '__name__', self.fn)!r})"


# ---------------------------------------------------------------------------------------------
# A local instruct model


class TransformersSummarizer(BaseSummarizer):
    """Summarize with a local instruct model through its chat template (greedy decoding).

    Pass a loaded ``model`` and ``tokenizer``, or a ``model_path`` (a local transformers
    directory), or neither for the default SmolLM2-135M-Instruct; the model is loaded on the
    first call, not here. Input longer than ``max_input_tokens`` is folded in several calls
    (previous summary + first chunk, that result + next chunk...). ``max_time`` (seconds) is
    passed to ``generate`` so a slow machine stops early instead of running unbounded.
    """

    def __init__(self, model: Any = None, tokenizer: Any = None, *, model_path: str | None = None,
                 prompt: str | None = None, system: str | None = DEFAULT_SYSTEM,
                 max_new_tokens: int = 160, max_input_tokens: int = 2048,
                 max_time: float | None = None) -> None:
        if (model is None) != (tokenizer is None):
            raise ConfigError("pass both model and tokenizer, or neither")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, not {max_new_tokens}")
        if max_input_tokens < 64:
            raise ConfigError(f"max_input_tokens must be >= 64, not {max_input_tokens}")
        self.prompt = _check_prompt(prompt)
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.max_time = max_time
        self.model_path = model_path
        self._model, self._tokenizer = model, tokenizer
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        name = self.model_path or getattr(self._tokenizer, "name_or_path", None) or "default"
        return f"TransformersSummarizer({name!r}, max_new_tokens={self.max_new_tokens})"

    def load(self) -> tuple[Any, Any]:
        """The model and tokenizer, loading them on first use (thread-safe)."""
        with self._lock:
            if self._model is None:
                from .models import load_model

                self._model, self._tokenizer = load_model(self.model_path)
            return self._model, self._tokenizer

    def _chat(self, previous: str | None, lines: Sequence[str]) -> list[dict[str, str]]:
        chat = [{"role": "system", "content": self.system}] if self.system else []
        chat.append({"role": "user", "content": render_prompt(self.prompt, previous, lines)})
        return chat

    def _prompt_len(self, tokenizer: Any, previous: str | None, lines: Sequence[str]) -> int:
        ids = tokenizer.apply_chat_template(self._chat(previous, lines), tokenize=True,
                                            add_generation_prompt=True)
        if not isinstance(ids, list):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        return len(ids)

    def _chunks(self, tokenizer: Any, previous: str | None,
                lines: list[str]) -> list[list[str]]:
        """Group lines so that each prompt fits ``max_input_tokens``; cut over-long lines.

        The previous summary is sized at ``max_new_tokens`` for every chunk after the first
        (that is what it will be by then)."""
        base = self._prompt_len(tokenizer, previous, [])
        later = self._prompt_len(tokenizer, "x " * self.max_new_tokens, [])
        room = self.max_input_tokens - max(base, later)
        if room < 16:
            raise SummarizerError(
                f"max_input_tokens={self.max_input_tokens} leaves no room for the conversation "
                f"after the prompt and summary ({max(base, later)} tokens)")
        chunks: list[list[str]] = [[]]
        used = 0
        for line in lines:
            ids = tokenizer.encode(line, add_special_tokens=False)
            if len(ids) + 1 > room:  # one line alone is too long: keep its head
                ids = ids[: room - 2]
                line = tokenizer.decode(ids) + " ..."
            cost = len(ids) + 2  # + newline, and a margin for merges at the joint
            if used + cost > room and chunks[-1]:
                chunks.append([])
                used = 0
            chunks[-1].append(line)
            used += cost
        return chunks

    def _generate(self, model: Any, tokenizer: Any, previous: str | None,
                  lines: Sequence[str]) -> str:
        import torch

        inputs = tokenizer.apply_chat_template(self._chat(previous, lines), tokenize=True,
                                               add_generation_prompt=True, return_dict=True,
                                               return_tensors="pt")
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        options: dict[str, Any] = dict(max_new_tokens=self.max_new_tokens, do_sample=False,
                                       top_p=None, top_k=None, temperature=None)
        if tokenizer.pad_token_id is not None:
            options["pad_token_id"] = tokenizer.pad_token_id
        elif tokenizer.eos_token_id is not None:
            options["pad_token_id"] = tokenizer.eos_token_id
        if self.max_time is not None:
            options["max_time"] = self.max_time
        with torch.inference_mode():
            output = model.generate(**inputs, **options)
        new = output[0, inputs["input_ids"].shape[1]:]
        return clean_summary(tokenizer.decode(new, skip_special_tokens=True))

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        model, tokenizer = self.load()
        lines = render_transcript(messages)
        summary = previous
        for chunk in self._chunks(tokenizer, previous, lines):
            summary = self._generate(model, tokenizer, summary, chunk) or summary
        if not summary or not summary.strip():
            raise SummarizerError("the model produced an empty summary")
        return summary


# ---------------------------------------------------------------------------------------------
# Any OpenAI-compatible endpoint


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
        self.prompt = _check_prompt(prompt)
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


# ---------------------------------------------------------------------------------------------
# Key facts, no model

_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_WEEKDAY = r"(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day"
_ORD = r"(?:st|nd|rd|th)?"
_DATE = re.compile(
    rf"\b(?:{_WEEKDAY},?\s+)?(?:"
    rf"\d{{1,2}}{_ORD}\s+(?:of\s+)?{_MONTH}\b\.?(?:,?\s+\d{{4}}\b)?"  # 14 March 2027
    rf"|{_MONTH}\.?\s+\d{{1,2}}{_ORD}\b(?:,?\s+\d{{4}}\b)?"  # March 14, 2027
    rf"|{_MONTH}\s+\d{{4}}\b"  # March 2027
    r"|\d{4}-\d{2}-\d{2}\b"  # 2027-03-14
    r"|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"  # 14/03/2027
    rf")|\b{_WEEKDAY}\b"
    r"|\b\d{1,2}:\d{2}(?:\s?(?:[ap]\.m\.|[ap]m\b))?|\b\d{1,2}\s?(?:[ap]\.m\.|[ap]m\b)",  # 10:30, 3 pm
    re.IGNORECASE)
_EMAIL_URL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b|\bhttps?://[^\s)\]>\"']+")
# Identifiers mixing capitals and digits: flight numbers, booking references, postcodes.
_CODE = re.compile(r"\b(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9]{2,}(?:-[A-Z0-9]+)*\b")
_NUMBER = re.compile(r"(?<![\w.])[-+]?[$€£¥]?\d+(?:[.,:]\d+)*(?:%|\s?(?:k|m|bn)\b)?")
_QUOTED = re.compile(r"\"([^\"\n]{1,120})\"|“([^”\n]{1,120})”|(?<!\w)'([^'\n]{1,120})'(?!\w)")
_NAME = re.compile(r"\b[A-Z][a-z]+(?:['’-][A-Za-z]+)*(?:\s+(?:[A-Z][a-z]+(?:['’-][A-Za-z]+)*"
                   r"|[A-Z]\.))*")
# Capitalised words that are not names on their own.
_NOT_NAMES = frozenset(
    "I I'm I've I'll I'd Im Ok Okay Yes No Hi Hello Hey Thanks Thank Please Sure Also And But "
    "Or So The A An This That These Those It It's Its He She They We You My Your Our Their His "
    "Her Mr Mrs Ms Dr What When Where Which Who Why How If Then There Here Just Let Got Noted "
    "By About".split())
_CLAUSE_START = re.compile(r"(?:^|[.!?:;]\s+|[\"“(\[]\s*|\n\s*|\s[-–—]\s+)$")


_TITLE = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Mx|Prof|St|Sr|Jr)\.\s+$")
# Sentence ends, except after a title ("Dr. Okafor") or an initial ("J. Smith").
_SENTENCE_END = re.compile(r"(?<!\bDr\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bMx\.)(?<!\bSt\.)(?<!\bSr\.)"
                           r"(?<!\bJr\.)(?<!\bMrs\.)(?<!\bProf\.)(?<!\b[A-Z]\.)"
                           r"(?<=[.!?])\s+|\n+")


def _is_clause_start(text: str, position: int) -> bool:
    before = text[max(0, position - 8):position]
    if _TITLE.search(before):
        return False
    return bool(_CLAUSE_START.search(before[-4:]))


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (titles and initials do not end one)."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]


def extract_facts(text: str, *, known_names: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """``(kind, value)`` pairs found in ``text``, in order, without overlaps.

    Kinds: ``date`` (dates, weekdays, times), ``contact`` (e-mail, URL), ``code`` (identifiers
    mixing capitals and digits), ``number``, ``quote`` (a quoted string) and ``name``
    (capitalised words; at the start of a sentence only if multi-word or in ``known_names``).
    """
    found: list[tuple[int, int, str, str]] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= a or start >= b for a, b in taken)

    def add(start: int, end: int, kind: str, value: str) -> None:
        if value and free(start, end):
            found.append((start, end, kind, value))
            taken.append((start, end))

    for match in _QUOTED.finditer(text):
        value = next(g for g in match.groups() if g is not None).strip()
        if len(value.split()) <= 12:
            add(match.start(), match.end(), "quote", value)
    for kind, pattern in (("date", _DATE), ("contact", _EMAIL_URL), ("code", _CODE),
                          ("number", _NUMBER)):
        for match in pattern.finditer(text):
            value = match.group().strip()
            if kind == "contact":
                value = value.rstrip(".,;:!?")
            add(match.start(), match.start() + len(value), kind, value)
    for match in _NAME.finditer(text):
        words = match.group().split()
        start = match.start()
        # Leading function words ("About Lisbon", "My Ingrid") are not part of the name.
        while words and words[0] in _NOT_NAMES:
            start += len(words[0])
            start += len(text[start:]) - len(text[start:].lstrip())
            words = words[1:]
        if not words:
            continue
        value = " ".join(words)
        at_clause_start = start == match.start() and _is_clause_start(text, start)
        if at_clause_start and len(words) == 1 and value not in known_names:
            continue
        add(start, match.end(), "name", value)
    found.sort()
    return [(kind, value) for _, _, kind, value in found]


def _json_texts(value: Any, key: str | None = None, *, quote: bool = False) -> list[str]:
    """Readable ``key: value`` fragments from parsed JSON (tool arguments and results).

    With ``quote`` (tool-call arguments), short string values are quoted, so that the value
    itself is kept as a fact (``city="Porto"``)."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _json_texts(v, str(k), quote=quote)]
    if isinstance(value, list):
        return [t for v in value for t in _json_texts(v, key, quote=quote)]
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, str):
        value = " ".join(value.split())
        if quote and value and len(value.split()) <= 6 and '"' not in value:
            return [f'{key}="{value}"' if key else f'"{value}"']
    return [f"{key}: {value}" if key else str(value)]


def drop_oldest_facts(text: str, header: str, fits: Callable[[str], bool]) -> str:
    """``text`` with the oldest lines of its facts block (the lines after the last ``header``)
    dropped until ``fits(text)`` holds, so the newest facts stay.

    Whatever precedes the header (a model summary) is kept. If not even the newest line fits,
    the block is dropped when there is such a part, else the header and the newest line are
    returned; either way the result may still not fit and the caller cuts it further.
    """
    if fits(text):
        return text
    index = text.rfind(header)
    if index < 0:
        return text
    head = text[:index].rstrip()
    lines = [line.strip() for line in text[index + len(header):].splitlines() if line.strip()]
    if not lines:
        return head or text

    def candidate(drop: int) -> str:
        block = "\n".join([header, *lines[drop:]])
        return f"{head}\n\n{block}" if head else block

    # The fewest oldest lines to drop (at least one, keeping at least one): fewer lines cost
    # fewer tokens, so a binary search; ``hi`` is only ever a count that was checked to fit.
    lo, hi = 1, len(lines)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(candidate(mid)):
            hi = mid
        else:
            lo = mid + 1
    if lo < len(lines):
        return candidate(lo)
    return head or candidate(len(lines) - 1)


class KeyFactsSummarizer(BaseSummarizer):
    """Carry names, numbers, dates, codes and quoted strings verbatim, no model needed.

    Each sentence of the folded messages that contains a fact not already in the block becomes
    one line ``- role: sentence`` (long sentences keep only ``context_words`` words around each
    fact, joined by " ... "). The block is the previous block plus the new lines, oldest first,
    under the ``header`` line; facts already present are not repeated, so a name mentioned in
    every turn costs one line. Deterministic and fast; it does not paraphrase anything.

    When a summary memory's ``max_summary_tokens`` cannot hold the block, :meth:`fit_summary`
    drops its *oldest* lines first, so new facts keep entering; what was said at the very
    start is what a memory's ``keep_first`` pins verbatim.
    """

    header = "Key facts (verbatim):"

    def __init__(self, *, max_sentence_words: int = 24, context_words: int = 6,
                 kinds: Sequence[str] | None = None) -> None:
        if max_sentence_words < 1 or context_words < 0:
            raise ConfigError("max_sentence_words must be >= 1 and context_words >= 0")
        all_kinds = ("date", "contact", "code", "number", "quote", "name")
        self.kinds = tuple(all_kinds if kinds is None else kinds)
        unknown = set(self.kinds) - set(all_kinds)
        if unknown:
            raise ConfigError(f"unknown fact kind(s): {', '.join(sorted(unknown))}")
        self.max_sentence_words = max_sentence_words
        self.context_words = context_words

    def __repr__(self) -> str:
        return f"KeyFactsSummarizer(kinds={list(self.kinds)})"

    def fit_summary(self, text: str, fits: Callable[[str], bool]) -> str:
        """Shorten ``text`` (a block this summarizer wrote) until ``fits(text)``, dropping the
        oldest fact lines first (see :func:`drop_oldest_facts`). Summary memories call it
        before their token-exact cut."""
        return drop_oldest_facts(text, self.header, fits)

    # -- pieces ---------------------------------------------------------------------------
    def previous_lines(self, previous: str | None) -> list[str]:
        """The fact lines of a previous block (the text after ``header``)."""
        if not previous:
            return []
        index = previous.rfind(self.header)
        body = previous[index + len(self.header):] if index >= 0 else previous
        return [line.strip() for line in body.splitlines() if line.strip().startswith("- ")]

    @staticmethod
    def _texts(message: Message) -> list[str]:
        texts = []
        if message.content:
            content = message.content
            if message.role == "tool" and content.lstrip()[:1] in "[{":
                try:
                    texts.extend(_json_texts(json.loads(content)))
                except ValueError:
                    texts.append(content)
            else:
                texts.append(content)
        for call in message.tool_calls:
            try:
                args = _json_texts(json.loads(call.arguments), quote=True)
            except ValueError:
                args = [call.arguments]
            texts.extend(f"{call.name}: {text}" for text in args)
        return texts

    def _snippet(self, sentence: str, values: list[str]) -> str:
        words = sentence.split()
        if len(words) <= self.max_sentence_words:
            return " ".join(words)
        # Keep context_words words either side of each fact, merging overlapping windows.
        spans: list[list[int]] = []
        for value in values:
            first = value.split()[0] if value.split() else value
            for index, word in enumerate(words):
                if first in word:
                    lo = max(0, index - self.context_words)
                    hi = min(len(words), index + len(value.split()) + self.context_words)
                    if spans and lo <= spans[-1][1]:
                        spans[-1][1] = max(spans[-1][1], hi)
                    else:
                        spans.append([lo, hi])
                    break
        spans.sort()
        merged: list[list[int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        parts = [" ".join(words[lo:hi]) for lo, hi in merged]
        return (("... " if merged and merged[0][0] > 0 else "") + " ... ".join(parts)
                + (" ..." if merged and merged[-1][1] < len(words) else ""))

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        lines = self.previous_lines(previous)
        old_text = "\n".join(lines)
        names = frozenset(v for k, v in extract_facts(old_text) if k == "name")
        known = {v for _, v in extract_facts(old_text, known_names=names)}
        # Names seen mid-sentence anywhere in the folded text also count at a sentence start.
        all_text = "\n".join(t for m in messages for t in self._texts(m))
        names |= frozenset(v for k, v in extract_facts(all_text) if k == "name")
        for message in messages:
            role = message.role
            for text in self._texts(message):
                for sentence in split_sentences(text):
                    facts = [v for k, v in extract_facts(sentence, known_names=names)
                             if k in self.kinds]
                    new = [v for v in facts if v not in known]
                    if not new:
                        continue
                    known.update(new)
                    lines.append(f"- {role}: {self._snippet(sentence, facts)}")
        if not lines:
            return previous.strip() if previous and previous.strip() else \
                f"{self.header}\n(none)"
        return "\n".join([self.header, *lines])


class CombinedSummarizer(BaseSummarizer):
    """A model summary followed by a facts block: ``CombinedSummarizer(model, KeyFacts())``.

    The previous combined text is split at the facts summarizer's ``header``: the model sees
    only its own previous summary, the facts summarizer only its block. If the model fails,
    the whole call fails (a memory then keeps its state, or trims if configured to).
    """

    def __init__(self, summarizer: Summarizer, facts: KeyFactsSummarizer | None = None) -> None:
        self.summarizer = summarizer
        self.facts = facts if facts is not None else KeyFactsSummarizer()
        if not getattr(self.facts, "header", None):
            raise ConfigError("the second summarizer needs a header line to find its block")

    def __repr__(self) -> str:
        return f"CombinedSummarizer({self.summarizer!r}, {self.facts!r})"

    def split(self, previous: str | None) -> tuple[str | None, str | None]:
        if not previous:
            return None, None
        index = previous.rfind(self.facts.header)
        if index < 0:
            return previous.strip() or None, None
        return previous[:index].strip() or None, previous[index:]

    def fit_summary(self, text: str, fits: Callable[[str], bool]) -> str:
        """Shorten ``text`` until ``fits(text)``: the oldest lines of the facts block go first,
        then the whole block; the model's summary is kept (the memory cuts it if needed)."""
        return drop_oldest_facts(text, self.facts.header, fits)

    def _join(self, summary: str, block: str) -> str:
        return f"{summary.strip()}\n\n{block.strip()}" if block.strip() else summary.strip()

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        own, block = self.split(previous)
        summary = run_summarizer(self.summarizer, own, messages)
        return self._join(summary, self.facts.summarize(block, messages))

    async def asummarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        own, block = self.split(previous)
        summary = await arun_summarizer(self.summarizer, own, messages)
        return self._join(summary, self.facts.summarize(block, messages))

