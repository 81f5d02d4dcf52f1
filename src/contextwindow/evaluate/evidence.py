"""Evidence recall: which gold evidence turns of a :class:`~.longchat.LongChat` question a
memory's context still holds, at a token budget.

A *contender* maps ``(history, question, budget, counter)`` to the context it would send: the
question is the newest user message, the history everything said before it. For each question
the final context is scored by

* **evidence** -- the share of the question's gold evidence turns whose full text (content and
  tool calls, stripped) is inside the context text (all of it joined): a turn kept verbatim,
  or quoted whole in a recall block, counts; a paraphrase or a fragment in a summary does not;
* **answer** -- whether every answer value occurs in the context as rendered for a model
  (each message with a timestamp prefixed ``[8 May 2023]``, so a date answer can be read off);
* **tokens** -- the context's prompt tokens by the counter; a context over the budget raises
  :class:`~contextwindow.errors.BudgetExceededError` unless its contender is marked
  ``checked=False`` (a third-party memory that does not count our way: the overflow is then
  reported, see :attr:`Score.over_budget`).

Shares are pooled over turns (evidence) or questions (answer) per question kind and over all.
Nothing here imports torch.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import BudgetExceededError
from ..messages import Message
from ..tokens import TokenCounter
from .longchat import LongChat, Question, format_day, mentions
from .recall import context_text

__all__ = ["BUDGETS", "Contender", "ContextFn", "Score", "answered", "evidence_recall",
           "rendered", "score", "shares"]

#: The prompt budgets the benchmark reports.
BUDGETS = (1024, 2048, 4096)


class ContextFn(Protocol):
    def __call__(self, history: list[Message], question: Message, budget: int,
                 counter: TokenCounter) -> list[Message]: ...


@dataclass(frozen=True, slots=True)
class Contender:
    """A way to build a context. ``checked``: over-budget contexts raise (our own memories);
    when false they are counted and reported instead."""

    build: ContextFn
    checked: bool = True

    def __call__(self, history: list[Message], question: Message, budget: int,
                 counter: TokenCounter) -> list[Message]:
        return self.build(history, question, budget, counter)


@dataclass(frozen=True, slots=True)
class Score:
    """One question's context, scored."""

    question: str
    kind: str
    found: int  # evidence turns inside the context
    evidence: int  # evidence turns of the question
    answer: bool  # every answer value is in the rendered context
    tokens: int
    messages: int

    def over_budget(self, budget: int) -> bool:
        return self.tokens > budget


def rendered(messages: Sequence[Message]) -> str:
    """The context as a model reads it: each message's text, prefixed with its date when it
    has a timestamp (``[8 May 2023] ...``)."""
    lines = []
    for message in messages:
        text = context_text([message])
        if message.timestamp is not None:
            day = datetime.datetime.fromisoformat(message.timestamp).date()
            text = f"[{format_day(day)}] {text}"
        lines.append(text)
    return "\n".join(lines)


_DAY_MONTH = re.compile(r"(\d{1,2}) ([A-Z][a-z]+)(?: \d{4})?")
_ORDINAL = r"(?:st|nd|rd|th)?"


def _says_day(value: str, reply: str) -> bool | None:
    """For a date value ("8 May 2023", "14 June"): whether ``reply`` names that day and
    month in a common form ("8 May", "8th of May", "May 8"); None for other values."""
    match = _DAY_MONTH.fullmatch(value)
    if match is None:
        return None
    day, month = match.groups()
    pattern = (rf"(?<!\d){day}{_ORDINAL}(?: of)? {month}\b|\b{month} {day}{_ORDINAL}(?!\d)")
    return re.search(pattern, reply, re.IGNORECASE) is not None


def answered(question: Question, reply: str) -> bool:
    """A model's ``reply`` gives the answer: every value is in it (a date in any common
    day-month form, the year not required)."""
    for value in question.values:
        day = _says_day(value, reply)
        if not (day if day is not None else mentions(value, reply)):
            return False
    return True


def score(chat: LongChat, question: Question, context: Sequence[Message],
          counter: TokenCounter, budget: int, *, checked: bool = True) -> Score:
    """Score ``context`` for ``question`` (raises if over ``budget`` and ``checked``)."""
    tokens = counter.count_messages(context)
    if checked and tokens > budget:
        raise BudgetExceededError(f"the context for {question.id} has {tokens} prompt tokens, "
                                  f"over the budget of {budget}", budget=budget,
                                  required=tokens, pinned=0)
    text = context_text(context)
    found = sum(context_text([chat.message(e)]).strip() in text for e in question.evidence)
    view = rendered(context)
    return Score(question.id, question.kind, found, len(question.evidence),
                 all(mentions(value, view) for value in question.values), tokens, len(context))


def evidence_recall(chat: LongChat, contenders: Mapping[str, Contender],
                    budgets: Sequence[int] = BUDGETS, counter: TokenCounter | None = None,
                    progress: Callable[[str, int], None] | None = None
                    ) -> dict[str, dict[int, list[Score]]]:
    """Every contender's score on every question at every budget:
    ``result[name][budget]`` is one :class:`Score` per question, in question order."""
    from ..memory import default_counter

    counter = counter or default_counter()
    history = list(chat.messages)  # every question comes after the last session
    out: dict[str, dict[int, list[Score]]] = {}
    for name, contender in contenders.items():
        out[name] = {}
        for budget in budgets:
            if progress is not None:
                progress(name, budget)
            out[name][budget] = [
                score(chat, q, contender(history, q.as_message(), budget, counter), counter,
                      budget, checked=contender.checked)
                for q in chat.questions]
    return out


def shares(scores: Sequence[Score], kinds: Sequence[str]) -> dict[str, dict[str, float]]:
    """Evidence share (pooled over turns), complete share (questions with every evidence
    turn) and answer share (questions), per kind and over ``all``."""
    out = {}
    for kind in (*kinds, "all"):
        rows = [s for s in scores if kind in ("all", s.kind)]
        if not rows:
            continue
        evidence = sum(s.evidence for s in rows)
        out[kind] = {"evidence": round(sum(s.found for s in rows) / evidence, 4),
                     "complete": round(sum(s.found == s.evidence for s in rows) / len(rows), 4),
                     "answer": round(sum(s.answer for s in rows) / len(rows), 4),
                     "questions": len(rows)}
    return out
