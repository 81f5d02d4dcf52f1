"""Fact recall: which memories keep what the user said early in a long conversation.

Plant ``N`` facts (a name, a number, a date, a code... each with one *key value*) as short user
turns in the early part of a conversation, feed the whole conversation to each memory, and
check which key values still appear, verbatim, in the final context the memory would send.
The facts are generated at random from a seed and planted at random turn boundaries, so the
measurement works on any conversation (a generated one by default, or your own). The kinds
of fact and their generators are in :mod:`.fact_kinds`.

Nothing here imports torch: the model summarizer, when used, loads the model itself.
"""

from __future__ import annotations

import random
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..adapters import as_messages
from ..errors import ConfigError, SummarizerError
from ..memory import DEFAULT_KEEP_FIRST
from ..messages import SYSTEM_ROLES, Message
from ..tokens import TokenCounter
from .fact_kinds import FACT_KINDS, random_fact

__all__ = [
    "Fact",
    "RecallReport",
    "RecallRow",
    "context_text",
    "default_memories",
    "fact_in_text",
    "fact_recall",
    "make_facts",
    "plant_facts",
]

_ACKS = ("Noted.", "Got it, I will remember that.", "Thanks, noted.", "Understood.", "Okay.")


@dataclass(frozen=True, slots=True)
class Fact:
    """One planted fact: the user ``statement`` and its key ``value`` (what recall looks for)."""

    kind: str  # name, number, amount, date, code
    subject: str  # e.g. "my sister's name"
    value: str  # e.g. "Ingrid": matched verbatim in the final context
    statement: str  # e.g. "By the way, my sister's name is Ingrid."


_OPENERS = ("", "By the way, ", "Before I forget: ", "For the record, ", "Note this: ")


def make_facts(n: int, *, seed: int = 0, kinds: Sequence[str] = FACT_KINDS,
               avoid: str = "") -> list[Fact]:
    """``n`` random facts (kinds in rotation), with distinct subjects and distinct values that
    do not occur in ``avoid`` (pass the conversation's text so a match can only come from the
    planted fact)."""
    if n < 1:
        raise ConfigError(f"the number of facts must be >= 1, not {n}")
    if not kinds:
        raise ConfigError("give at least one fact kind")
    rng = random.Random(seed)
    facts: list[Fact] = []
    subjects: set[str] = set()
    values: set[str] = set()
    attempts = 0
    while len(facts) < n:
        attempts += 1
        if attempts > 200 * n:
            raise ConfigError(f"cannot generate {n} distinct facts of kinds {list(kinds)}; "
                              "ask for fewer")
        kind = kinds[len(facts) % len(kinds)]
        subject, value, sentence = random_fact(kind, rng)
        if subject in subjects or any(value in v or v in value for v in values) \
                or fact_in_text(value, avoid):
            continue
        opener = rng.choice(_OPENERS)
        statement = opener + (sentence[0].lower() + sentence[1:] if opener else sentence)
        facts.append(Fact(kind, subject, value, statement))
        subjects.add(subject)
        values.add(value)
    return facts


def plant_facts(conversation: Sequence[Any], facts: Sequence[Fact], *, within: float = 0.25,
                seed: int = 0) -> tuple[list[Message], list[int]]:
    """Insert each fact as a user turn plus a short assistant acknowledgement (which does not
    repeat the value) at random turn boundaries in the first ``within`` of the conversation.

    Facts go in before user messages only, so a tool call is never separated from its results.
    Returns the new conversation and the index of each fact's user message in it.
    """
    if not 0 < within <= 1:
        raise ConfigError(f"within must be in (0, 1], not {within}")
    messages = as_messages(conversation)
    starts = [i for i, m in enumerate(messages) if m.role == "user"]
    if not starts:  # no user turns: plant after the leading system messages
        lead = 0
        while lead < len(messages) and messages[lead].role in SYSTEM_ROLES:
            lead += 1
        starts = [lead]
    early = starts[: max(1, round(len(starts) * within))]
    rng = random.Random(seed)
    slots = sorted(rng.choice(early) for _ in facts)
    by_slot: dict[int, list[Fact]] = {}
    for slot, fact in zip(slots, facts):
        by_slot.setdefault(slot, []).append(fact)
    out: list[Message] = []
    positions: dict[int, int] = {}
    order = {id(fact): k for k, fact in enumerate(facts)}
    for index in range(len(messages) + 1):
        for fact in by_slot.get(index, ()):
            positions[order[id(fact)]] = len(out)
            out.append(Message(role="user", content=fact.statement))
            out.append(Message(role="assistant", content=rng.choice(_ACKS)))
        if index < len(messages):
            out.append(messages[index])
    return out, [positions[k] for k in range(len(facts))]


def fact_in_text(value: str, text: str) -> bool:
    """Exact, case-sensitive match of ``value`` not glued to a longer word or number
    ("4817" does not match inside "48170")."""
    if not value:
        return False
    return re.search(rf"(?<![\w]){re.escape(value)}(?![\w])", text) is not None


def context_text(messages: Sequence[Message]) -> str:
    """Everything a model would read in ``messages``: contents and tool-call arguments."""
    parts = []
    for message in messages:
        if message.content:
            parts.append(message.content)
        parts.extend(f"{call.name}({call.arguments})" for call in message.tool_calls)
    return "\n".join(parts)


@dataclass(slots=True)
class RecallRow:
    """One memory's result."""

    name: str
    found: tuple[bool, ...]
    tokens: int  # prompt tokens of the final context (counter of the memory)
    messages: int  # messages in the final context
    seconds: float  # wall time to feed the conversation
    summarizations: int | None = None  # summarizer calls (summary memories only)
    error: str | None = None  # set if the memory could not produce a context
    fold_seconds: tuple[float, ...] = ()  # wall time of each add that ran the summarizer
    summary: str | None = None  # the final summary text (summary memories only)
    failures: int | None = None  # failed summarizer calls (summary memories only)
    last_failure: str | None = None  # the last summarizer error, if any

    @property
    def recalled(self) -> int:
        return sum(self.found)

    @property
    def recall(self) -> float:
        return self.recalled / len(self.found) if self.found else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"memory": self.name, "recalled": self.recalled, "facts": len(self.found),
                "recall": round(self.recall, 4), "tokens": self.tokens,
                "messages": self.messages, "seconds": round(self.seconds, 2),
                "summarizations": self.summarizations, "failures": self.failures,
                "found": list(self.found),
                "fold_seconds": [round(s, 3) for s in self.fold_seconds],
                "summary": self.summary,
                **({"last_failure": self.last_failure} if self.last_failure else {}),
                **({"error": self.error} if self.error else {})}


@dataclass(slots=True)
class RecallReport:
    """Facts, where they were planted, and one row per memory."""

    facts: list[Fact]
    positions: list[int]
    conversation_messages: int
    conversation_tokens: int
    budget: int | None
    counter: str
    rows: list[RecallRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"facts": [{"kind": f.kind, "value": f.value, "statement": f.statement,
                           "position": p} for f, p in zip(self.facts, self.positions)],
                "conversation_messages": self.conversation_messages,
                "conversation_tokens": self.conversation_tokens, "budget": self.budget,
                "counter": self.counter, "rows": [row.to_dict() for row in self.rows]}


MemoryFactory = Callable[[], Any]


def default_memories(budget: int, *, counter: TokenCounter | None = None,
                     model_summarizer: Any = None, window_k: int = 4,
                     max_summary_tokens: int | None = None, keep_first: int = DEFAULT_KEEP_FIRST,
                     low_water: float = 0.6, on_error: str = "trim") -> dict[str, MemoryFactory]:
    """The standard line-up at one budget: Buffer, Window(k), TokenBuffer, SinkWindow, Recall
    (the newest turns plus older ones the final user turn recalls), and SummaryBuffer with
    KeyFacts -- plus, if ``model_summarizer`` is given, SummaryBuffer with the model and with
    the model combined with KeyFacts.

    The summary memories use ``on_error="trim"`` by default: a failing summarizer call (an
    empty model summary, say) falls back to token-buffer trimming for that add instead of
    ending the evaluation; :func:`fact_recall` counts the failures per row."""
    from ..memory import (
        BufferMemory,
        RecallMemory,
        SinkWindowMemory,
        SummaryBufferMemory,
        TokenBufferMemory,
        WindowMemory,
    )
    from ..summarize import CombinedSummarizer, KeyFactsSummarizer

    options: dict[str, Any] = {"counter": counter} if counter is not None else {}
    summary_options = dict(max_summary_tokens=max_summary_tokens, low_water=low_water,
                           on_error=on_error, **options)
    memories: dict[str, MemoryFactory] = {
        "Buffer": lambda: BufferMemory(**options),
        f"Window(k={window_k})": lambda: WindowMemory(window_k, **options),
        "TokenBuffer": lambda: TokenBufferMemory(budget, **options),
        f"SinkWindow(keep_first={keep_first})":
            lambda: SinkWindowMemory(budget, keep_first=keep_first, **options),
        "Recall": lambda: RecallMemory(budget, **options),
    }
    if model_summarizer is not None:
        memories["SummaryBuffer(model)"] = lambda: SummaryBufferMemory(
            budget, model_summarizer, **summary_options)
    memories["SummaryBuffer(KeyFacts)"] = lambda: SummaryBufferMemory(
        budget, KeyFactsSummarizer(), **summary_options)
    if model_summarizer is not None:
        memories["SummaryBuffer(model+KeyFacts)"] = lambda: SummaryBufferMemory(
            budget, CombinedSummarizer(model_summarizer, KeyFactsSummarizer()),
            **summary_options)
    return memories


def fact_recall(
    memories: Mapping[str, MemoryFactory] | None = None,
    *,
    conversation: Sequence[Any] | None = None,
    facts: Sequence[Fact] | None = None,
    n_facts: int = 8,
    turns: int = 60,
    seed: int = 0,
    within: float = 0.25,
    budget: int = 1024,
    counter: TokenCounter | None = None,
    model_summarizer: Any = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> RecallReport:
    """Plant facts in a conversation, feed it to each memory, and count the facts whose key
    value is still in the final context.

    ``memories`` maps a label to a zero-argument factory returning a fresh, empty memory
    (default: :func:`default_memories` at ``budget``). ``conversation`` defaults to
    ``sample_conversation(turns, seed=seed)``; ``facts`` to ``make_facts(n_facts, seed=seed)``.
    ``progress(name, done, total)`` is called as messages are fed.

    A failing summarizer does not stop the evaluation: the default memories fall back to
    trimming (each row's ``failures`` counts the failed calls, ``last_failure`` has the last
    error); a memory that raises :class:`~contextwindow.errors.SummarizerError` anyway
    (``on_error="raise"``) stops being fed and its row reports the ``error``.
    """
    from ..memory import default_counter
    from ..samples import sample_conversation

    counter = counter or default_counter()
    base = as_messages(conversation) if conversation is not None else \
        sample_conversation(turns, seed=seed)
    facts = _facts_for(base, facts, n_facts, seed)
    planted, positions = plant_facts(base, facts, within=within, seed=seed)
    if memories is None:
        memories = default_memories(budget, counter=counter, model_summarizer=model_summarizer)
    report = RecallReport(list(facts), positions, len(planted), counter.count_messages(planted),
                          budget, counter.name)
    for name, factory in memories.items():
        report.rows.append(_measure(name, factory(), planted, facts, progress))
    return report


def _facts_for(base: Sequence[Message], facts: Sequence[Fact] | None, n_facts: int,
               seed: int) -> list[Fact]:
    """The given facts, refused if a value already occurs in ``base``; else ``n_facts`` random
    ones whose values do not."""
    base_text = context_text(base)
    if facts is None:
        return make_facts(n_facts, seed=seed, avoid=base_text)
    for fact in facts:
        if fact_in_text(fact.value, base_text):
            raise ConfigError(f"the value {fact.value!r} already occurs in the conversation; "
                              "recall of it could not be measured")
    return list(facts)


def feed(name: str, memory: Any, planted: Sequence[Message],
         progress: Callable[[str, int, int], None] | None, *,
         raise_errors: bool = False) -> tuple[str | None, list[float]]:
    """Add every message to ``memory`` (failed folds only counted, not warned about); the
    error that stopped it (if any; raised instead with ``raise_errors``) and the wall time
    of each add that ran the summarizer."""
    from ..summarize import SummarizerWarning

    folds: list[float] = []
    with warnings.catch_warnings():
        # on_error="trim" warns at each failed fold; the row counts them instead
        warnings.simplefilter("ignore", SummarizerWarning)
        for done, message in enumerate(planted, 1):
            before = memory.status().summarizer_calls
            started = time.perf_counter()
            try:
                memory.add_message(message)
            except SummarizerError as exc:  # on_error="raise": stop feeding this memory
                if raise_errors:
                    raise
                return (f"SummarizerError after {done - 1} of {len(planted)} messages: "
                        f"{exc}"), folds
            if memory.status().summarizer_calls > before:
                folds.append(time.perf_counter() - started)
            if progress is not None:
                progress(name, done, len(planted))
    return None, folds


def _measure(name: str, memory: Any, planted: Sequence[Message], facts: Sequence[Fact],
             progress: Callable[[str, int, int], None] | None) -> RecallRow:
    """Feed ``planted`` to a fresh memory and read which facts its final context keeps."""
    began = time.perf_counter()
    error, folds = feed(name, memory, planted, progress)
    seconds = time.perf_counter() - began
    try:
        context = memory.messages()
        tokens = memory.token_count()
    except Exception as exc:  # noqa: BLE001 -- e.g. BudgetExceededError: report it, go on
        context, tokens = [], 0
        error = error or f"{type(exc).__name__}: {exc}"
    status = memory.status()
    text = context_text(context)
    return RecallRow(
        name=name, found=tuple(fact_in_text(f.value, text) for f in facts), tokens=tokens,
        messages=len(context), seconds=seconds, summarizations=status.summarizations,
        error=error, fold_seconds=tuple(folds), summary=status.summary,
        failures=status.failures, last_failure=status.last_error)
