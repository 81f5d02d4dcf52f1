"""Long multi-session chats with known evidence: the conversations recall is measured on.

:func:`generate` writes, from a seed and no model, many dated sessions between a user and an
assistant: mostly everyday requests and small talk (:mod:`._longchat_filler`), with facts said
once in passing inside them -- preferences, people, places, plans, pets, jobs, numbers, events
with dates -- some corrected sessions later (:mod:`.longchat_facts`). The questions come
after the last session; each names its gold evidence (message ids) and its answer:

* ``single`` -- evidence: the one statement; ``multi`` -- the two statements it needs;
* ``temporal`` -- the statement of the event; the answer is its session's date (``8 May
  2023``, as recalled turns show it) or the date it states (``14 June``);
* ``updated`` -- evidence: the original statement *and* the correction, in that order (the
  correction alone answers it; the original is what shows it was a change); the answer is the
  corrected value, ``stale`` the superseded one.

Every message has a stable id (``s012.03``: session 12, message 3) and its session's date as
``timestamp``. Each answer value occurs only in its evidence turns (and, for a corrected value,
the question's other statement), so finding it in a context means the evidence was kept.
:class:`LongChat` round-trips through JSON (:meth:`LongChat.to_dict`,
:meth:`LongChat.from_dict`): the benchmark runs on conversations from elsewhere in that shape.
Nothing here imports torch.
"""

from __future__ import annotations

import datetime
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..messages import Message, from_openai
from ._longchat_filler import articles, exchange, reply, request
from .longchat_facts import KINDS, Plan, draw_plans
from .recall import context_text

__all__ = ["DEFAULT_QUESTIONS", "LongChat", "Question", "format_day", "generate", "mentions"]

#: Questions per kind by default: 42 per conversation.
DEFAULT_QUESTIONS: Mapping[str, int] = {"single": 12, "multi": 10, "temporal": 10, "updated": 10}
_GAPS = (1, 1, 2, 2, 3, 3, 4, 5, 7, 10, 14)  # days between sessions
_ASIDES = ("Thanks for letting me know.", "Good to know.", "Ah, okay!", "Noted!",
           "Oh, I see.", "Thanks for the update.")


def mentions(value: str, text: str) -> bool:
    """``value`` occurs in ``text`` as a whole word or phrase, in any case ("Beekeeping is
    ..." mentions ``beekeeping``; "4817" is not in "48170")."""
    return bool(value) and re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text,
                                     re.IGNORECASE) is not None


def format_day(day: datetime.date) -> str:
    """``8 May 2023``: how recalled turns show their date, and how a date answer is written."""
    return f"{day.day} {day:%B %Y}"


@dataclass(frozen=True, slots=True)
class Question:
    """A question asked after the last session, with its gold evidence and answer."""

    id: str
    kind: str  # single, multi, temporal, updated
    topic: str
    text: str
    answer: str  # as a person would say it ("Lisbon and Ghent")
    values: tuple[str, ...]  # each must be in a context (or a reply) for it to count
    evidence: tuple[str, ...]  # message ids, in conversation order
    stale: str | None = None  # updated: the superseded value

    def as_message(self) -> Message:
        """The question as the newest user message."""
        return Message(role="user", content=self.text, id=self.id)


@dataclass(slots=True)
class LongChat:
    """A generated (or loaded) conversation and its questions."""

    messages: list[Message]
    questions: list[Question]
    seed: int | None = None
    sessions: int = 0
    _by_id: dict[str, Message] = field(default_factory=dict, repr=False)

    def message(self, message_id: str) -> Message:
        """The message with ``message_id``."""
        if not self._by_id:
            self._by_id = {m.id: m for m in self.messages}
        return self._by_id[message_id]

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "sessions": self.sessions,
                "messages": [m.to_record() for m in self.messages],
                "questions": [{"id": q.id, "kind": q.kind, "topic": q.topic, "text": q.text,
                               "answer": q.answer, "values": list(q.values),
                               "evidence": list(q.evidence), "stale": q.stale}
                              for q in self.questions]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LongChat:
        """A conversation in :meth:`to_dict`'s shape (``seed``/``sessions``/``topic``/
        ``values``/``stale`` optional; ``values`` defaults to the answer); refused if a
        question names evidence that is not one of its messages, or one without text."""
        messages = [from_openai(raw) for raw in data["messages"]]
        said = {m.id: context_text([m]).strip() for m in messages}
        questions = []
        for raw in data["questions"]:
            missing = [e for e in raw["evidence"] if not said.get(e)]
            if missing or not raw["evidence"]:
                raise ConfigError(f"question {raw['id']!r}: evidence {missing or '[]'} is not "
                                  "a message of the conversation with text")
            questions.append(Question(
                raw["id"], raw["kind"], raw.get("topic", ""), raw["text"], raw["answer"],
                tuple(raw.get("values") or (raw["answer"],)), tuple(raw["evidence"]),
                raw.get("stale")))
        return cls(messages, questions, data.get("seed"), data.get("sessions", 0))


def _place(rng: random.Random, plans: Sequence[Plan], sessions: int) -> list[list[int]]:
    """The session of each statement of each plan: corrections at least a tenth of the chat
    after what they correct; the statements of one question in different sessions."""
    out = []
    gap = max(2, sessions // 10)
    for plan in plans:
        if plan.ordered:
            first = rng.randrange(0, max(1, int(sessions * 0.6)))
            out.append([first, rng.randrange(min(first + gap, sessions - 1), sessions)])
        else:
            out.append(rng.sample(range(sessions), len(plan.statements)))
    return out


def _clean_exchange(rng: random.Random, reserved: set[str]) -> list[tuple[str, str]]:
    """A filler exchange that mentions none of the reserved values."""
    while True:
        turns = exchange(rng)
        if not any(mentions(value, text) for value in reserved for _, text in turns):
            return turns


def _fact_exchange(rng: random.Random, statement: str,
                   reserved: set[str]) -> list[tuple[str, str]]:
    """The user says ``statement`` in passing: before or after a request, or as a remark."""
    statement = articles(statement)
    said = statement[0].upper() + statement[1:]
    while True:
        text, replies, drawn = request(rng)
        answer = reply(rng, replies, drawn)
        if not any(mentions(value, text + answer) for value in reserved):
            break
    style = rng.randrange(3)
    if style == 0:
        user = f"{said}{rng.choice(('.', '!', ', by the way.'))} {text}"
    elif style == 1:
        user = f"{text} {rng.choice(('Also, ', 'Oh and ', 'Unrelated, but '))}{statement}."
    else:
        opener = rng.choice(("Anyway, ", "Random update: ", "", "So, "))
        user = (opener + statement if opener else said) + rng.choice((".", "!", " :)"))
        answer = rng.choice(_ASIDES)
    return [("user", user), ("assistant", answer)]


def generate(seed: int = 0, *, sessions: int = 150,
             questions: Mapping[str, int] = DEFAULT_QUESTIONS,
             exchanges: tuple[int, int] = (2, 6),
             start: datetime.date | None = None) -> LongChat:
    """A conversation of ``sessions`` dated sessions (``exchanges``: the range of user /
    assistant exchanges in each) and its questions, ``questions[kind]`` of each kind.
    The same arguments always give the same conversation."""
    if sessions < 2 or not 1 <= exchanges[0] <= exchanges[1]:
        raise ConfigError(f"need sessions >= 2 and 1 <= exchanges[0] <= exchanges[1], not "
                          f"{sessions} / {exchanges}")
    rng = random.Random(seed)
    plans, reserved = draw_plans(rng, dict(questions))
    places = _place(rng, plans, sessions)
    said: dict[int, list[tuple[int, int]]] = {}  # session -> (plan, statement index)
    for p, where in enumerate(places):
        for k, session in enumerate(where):
            said.setdefault(session, []).append((p, k))
    day = start or datetime.date(2023, 1, 1) + datetime.timedelta(days=rng.randrange(365))
    messages: list[Message] = []
    evidence: dict[tuple[int, int], str] = {}
    days: list[datetime.date] = []
    for session in range(sessions):
        facts = said.get(session, [])
        rng.shuffle(facts)
        count = max(rng.randint(*exchanges), len(facts))
        slots = dict(zip(rng.sample(range(count), len(facts)), facts))
        base = len(messages)
        for slot in range(count):
            fact = slots.get(slot)
            if fact is None:
                turns = _clean_exchange(rng, reserved)
            else:
                turns = _fact_exchange(rng, plans[fact[0]].statements[fact[1]], reserved)
                evidence[fact] = f"s{session:03d}.{len(messages) - base:02d}"
            messages += [Message(role=role, content=text, timestamp=day.isoformat(),
                                 id=f"s{session:03d}.{len(messages) - base + k:02d}")
                         for k, (role, text) in enumerate(turns)]
        days.append(day)
        day += datetime.timedelta(days=rng.choice(_GAPS))
    chat = LongChat(messages, [], seed, sessions)
    for p, plan in enumerate(plans):
        # conversation order: ids sort as they were said
        ids = tuple(sorted(evidence[(p, k)] for k in range(len(plan.statements))))
        answer = format_day(days[places[p][0]]) if plan.on_session_date else plan.answer
        values = (answer,) if plan.on_session_date else plan.values
        chat.questions.append(Question(f"q{p:02d}", plan.kind, plan.topic, plan.question,
                                       answer, values, ids, plan.stale))
    rng.shuffle(chat.questions)
    _check(chat)
    return chat


def _check(chat: LongChat) -> None:
    """Each question's values are said in its evidence and nowhere else except where another
    statement of the same question repeats them (a correction naming the old value)."""
    for question in chat.questions:
        if question.kind not in KINDS:
            raise ConfigError(f"unknown kind {question.kind!r}")
        if question.topic.startswith("event:"):
            continue
        inside = context_text([chat.message(e) for e in question.evidence])
        outside = context_text([m for m in chat.messages if m.id not in question.evidence])
        for value in question.values:
            if not mentions(value, inside) or mentions(value, outside):
                raise ConfigError(f"{question.id}: value {value!r} is not said exactly in its "
                                  "evidence")
