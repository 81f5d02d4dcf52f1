"""Recall of facts as people phrase them, which the key-facts extractor was not written for.

:mod:`contextwindow.evaluate.recall` plants codes, amounts, dates and names: the shapes
:class:`~contextwindow.summarize.KeyFactsSummarizer` looks for, so a perfect score there says
little. Here the facts are preferences ("I can't stand coriander"), relations ("Hamid, my
sister's partner, ..."), plans ("we're thinking of going hiking"), and corrections of an earlier
fact ("actually, make that Thursday"), mostly lower-case words in ordinary sentences. A memory
passes a fact when its final context lets the question be answered: the answer is present
verbatim and, for a corrected fact, the latest value is present and comes after every mention of
the stale one (a context that shows "Tuesday" last would be answered with "Tuesday").

Everything is generated from a seed. Nothing here imports torch.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..messages import Message
from .recall import context_text, fact_in_text, feed

# Each topic: the question, how the fact is first said, how it is corrected, and the values.
_TOPICS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "dislike": ("Which food should never be suggested to the user?",
                ("honestly I can't stand {v}, so please leave it out of any recipe",
                 "just so you know, {v} makes me feel sick"),
                ("wait, I mixed that up, it's {v} I can't eat",),
                ("coriander", "aubergine", "blue cheese", "anchovies", "liquorice", "okra")),
    "hobby": ("What does the user do to unwind?",
              ("these days I mostly unwind with {v} on weekends",
               "{v} is what keeps me sane after work"),
              ("hmm, thinking about it, {v} is really my main thing now",),
              ("birdwatching", "pottery", "bouldering", "sourdough baking", "crochet",
               "geocaching")),
    "partner": ("What is the name of the user's sister's partner?",
                ("my sister's partner {v} is joining us, he's lovely",
                 "oh, and {v} (my sister's partner) will drive"),
                ("sorry, her partner is {v} now, they split up in the spring",),
                ("Hamid", "Torvald", "Ezekiel", "Lorcan", "Teodor", "Amadou")),
    "neighbour": ("Who waters the user's plants?",
                  ("our neighbour {v} waters the plants when we're away",),
                  ("actually {v} from across the street does the plants now",),
                  ("Mrs Abernathy", "old Mr Pruitt", "Gwendolyn", "Bashir", "Philippa")),
    "meeting_day": ("On which day is the user meeting the architect?",
                    ("let's pencil in the architect for {v}",
                     "the architect can come round on {v}, I think"),
                    ("actually, make that {v} for the architect",
                     "scratch that, the architect said {v} suits her better"),
                    ("Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")),
    "trip": ("Where is the user planning to go in the spring?",
             ("we're thinking of a few days in {v} in the spring",
              "the plan for spring is {v}, if the train fares are sane"),
             ("change of plan, we're doing {v} instead",),
             ("the Dolomites", "Connemara", "the Algarve", "Ghent", "Lake Bled", "Transylvania")),
    "drink": ("How does the user take their coffee?",
              ("I take my coffee {v}, always",),
              ("my doctor says no sugar, so I have it {v} now",),
              ("with oat milk", "black", "as a flat white", "with a dash of cardamom")),
    "allergy": ("Which medicine is the user allergic to?",
                ("careful: I'm allergic to {v}, it came up last winter",),
                ("I misremembered, the allergy is to {v}",),
                ("penicillin", "ibuprofen", "codeine", "aspirin")),
    "gift": ("What does the user want to give their father?",
             ("for dad's birthday I'd like to get him {v}",),
             ("mum talked me out of it, we're getting him {v}",),
             ("a fountain pen", "a bread maker", "a telescope", "a chess set", "a hammock")),
    "kid_club": ("Which club does the user's son go to?",
                 ("Leo started {v} on Mondays and loves it",),
                 ("Leo quit that, he's doing {v} now",),
                 ("fencing", "judo", "the robotics club", "choir", "archery")),
}
_FILLERS = ("oh, ", "by the way, ", "", "random thing, but ", "before I forget, ", "also, ")
_ACKS = ("Okay!", "Sounds good.", "Good to know.", "Right.", "Ha, fair enough.")


@dataclass(frozen=True, slots=True)
class NaturalFact:
    """One fact: its ``question``, the ``answer`` now, and the ``stale`` earlier value (if the
    user corrected it)."""

    topic: str
    question: str
    answer: str
    stale: str | None = None

    @property
    def corrected(self) -> bool:
        return self.stale is not None


def answerable(fact: NaturalFact, text: str) -> bool:
    """The answer is present verbatim, and after the last mention of a stale value."""
    if not fact_in_text(fact.answer, text):
        return False
    if fact.stale is None or not fact_in_text(fact.stale, text):
        return True
    last = {value: max(m.start() for m in re.finditer(
        rf"(?<![\w]){re.escape(value)}(?![\w])", text)) for value in (fact.answer, fact.stale)}
    return last[fact.answer] > last[fact.stale]


def _say(rng: random.Random, template: str, value: str, filler: bool = True) -> str:
    text = (rng.choice(_FILLERS) if filler else "") + template.format(v=value)
    return text[0].upper() + text[1:] + rng.choice((".", "!", "", " :)"))


def natural_conversation(base: Sequence[Message], n_facts: int, n_corrections: int, *,
                         seed: int = 0, within: float = 0.25
                         ) -> tuple[list[Message], list[NaturalFact]]:
    """``base`` with ``n_facts`` facts said in its first ``within`` (each a user turn and a short
    acknowledgement), and ``n_corrections`` of them corrected later, before the halfway point.
    Values never occur in ``base``."""
    if not 0 <= n_corrections <= n_facts <= len(_TOPICS) or n_facts < 1:
        raise ConfigError(f"need 0 <= corrections <= facts <= {len(_TOPICS)}, facts >= 1, "
                          f"not {n_corrections} / {n_facts}")
    rng = random.Random(seed)
    base_text = context_text(base)
    starts = [i for i, m in enumerate(base) if m.role == "user"]
    early = starts[: max(1, round(len(starts) * within))]
    middle = starts[len(early): max(len(early) + 1, len(starts) // 2)]
    inserts: dict[int, list[str]] = {}
    facts = []
    for k, topic in enumerate(rng.sample(sorted(_TOPICS), n_facts)):
        question, says, corrects, values = _TOPICS[topic]
        first, latest = rng.sample([v for v in values if not fact_in_text(v, base_text)], 2)
        inserts.setdefault(rng.choice(early), []).append(_say(rng, rng.choice(says), first))
        if k < n_corrections:
            inserts.setdefault(rng.choice(middle), []).append(
                _say(rng, rng.choice(corrects), latest, filler=False))
            facts.append(NaturalFact(topic, question, latest, first))
        else:
            facts.append(NaturalFact(topic, question, first))
    out: list[Message] = []
    for index, message in enumerate(base):
        for said in inserts.get(index, ()):
            out += [Message(role="user", content=said),
                    Message(role="assistant", content=rng.choice(_ACKS))]
        out.append(message)
    return out, facts


@dataclass(frozen=True, slots=True)
class NaturalRecallRow:
    """One memory on one conversation: which facts its final context can answer."""

    name: str
    answered: tuple[bool, ...]
    tokens: int
    messages: int
    seconds: float
    summarizer_calls: int
    failures: int
    summary: str | None


def natural_recall(memories: Mapping[str, Callable[[], Any]], conversation: Sequence[Message],
                   facts: Sequence[NaturalFact],
                   progress: Callable[[str, int, int], None] | None = None
                   ) -> list[NaturalRecallRow]:
    """Feed ``conversation`` to a fresh memory from each factory and judge its final context."""
    rows = []
    for name, factory in memories.items():
        memory = factory()
        began = time.perf_counter()
        feed(name, memory, conversation, progress, raise_errors=True)
        seconds = time.perf_counter() - began
        context = memory.messages()
        text = context_text(context)
        status = memory.status()
        rows.append(NaturalRecallRow(
            name, tuple(answerable(fact, text) for fact in facts), memory.token_count(),
            len(context), seconds, status.summarizer_calls, status.failures, status.summary))
    return rows
