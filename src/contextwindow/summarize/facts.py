"""Key facts without a model: names, numbers, dates, codes and quotes carried verbatim.

Regular expressions only (deterministic, fast, no torch). :class:`CombinedSummarizer` lives here
because it is defined by the facts block it appends to a model summary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigError
from ..messages import Message
from .base import BaseSummarizer, Summarizer, arun_summarizer, run_summarizer

__all__ = ["CombinedSummarizer", "KeyFactsSummarizer", "drop_oldest_facts", "extract_facts",
           "split_sentences"]

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
    r"|\b\d{1,2}:\d{2}(?:\s?(?:[ap]\.m\.|[ap]m\b))?"  # 10:30, 10:30 am
    r"|\b\d{1,2}\s?(?:[ap]\.m\.|[ap]m\b)",  # 3 pm
    re.IGNORECASE)
_EMAIL_URL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b|\bhttps?://[^\s)\]>\"']+")
# Identifiers mixing capitals and digits: flight numbers, booking references, postcodes.
_CODE = re.compile(r"\b(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9]{2,}(?:-[A-Z0-9]+)*\b")
_NUMBER = re.compile(r"(?<![\w.])[-+]?[$€£¥]?\d+(?:[.,:]\d+)*(?:%|\s?(?:k|m|bn)\b)?")
_QUOTED = re.compile(r"\"([^\"\n]{1,120})\"|“([^”\n]{1,120})”|(?<!\w)'([^'\n]{1,120})'(?!\w)")
_NAME = re.compile(r"\b[A-Z][a-z]+(?:['’-][A-Za-z]+)*(?:\s+(?:[A-Z][a-z]+(?:['’-][A-Za-z]+)*"
                   r"|[A-Z]\.))*")
# Capitalised words that are not names on their own.
_NOT_NAME_WORDS = (
    "I I'm I've I'll I'd Im Ok Okay Yes No Hi Hello Hey Thanks Thank Please Sure Also And But "
    "Or So The A An This That These Those It It's Its He She They We You My Your Our Their His "
    "Her Mr Mrs Ms Dr What When Where Which Who Why How If Then There Here Just Let Got Noted "
    "By About")
_NOT_NAMES = frozenset(_NOT_NAME_WORDS.split())
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


