"""The kinds of fact that :mod:`.recall` plants: one generator per kind, keyed by name.

Each generator draws a fact from ``rng`` and returns ``(subject, value, sentence)``: what it is
about ("my sister's name"), the key value recall looks for verbatim ("Ingrid"), and how the user
says it ("My sister's name is Ingrid."). Values are shapes a reader would copy exactly: names,
4-6 digit numbers, amounts, dates, and 6-character codes mixing letters and digits.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..errors import ConfigError

__all__ = ["FACT_KINDS", "FACT_MAKERS", "random_fact"]

_FIRST_NAMES = (
    "Ingrid", "Tomasz", "Aiko", "Rafael", "Oluwaseun", "Margit", "Dmitri", "Priya", "Lucien",
    "Saoirse", "Kwame", "Yolanda", "Henrik", "Mei", "Bartholomew", "Ximena", "Anselm", "Farida",
    "Leopold", "Noor", "Casimir", "Thandiwe", "Evander", "Rosalind", "Ignatius", "Zofia",
    "Osvaldo", "Hyun-woo", "Marisol", "Fintan", "Ottilie", "Benedikt", "Anneliese", "Kofi",
    "Wilhelmina", "Emrys", "Svetlana", "Dagny", "Cosimo", "Itzel",
)
_RELATIONS = (
    "sister", "brother", "neighbour", "manager", "dentist", "landlord", "cat", "dog",
    "accountant", "piano teacher", "cousin", "godmother", "physiotherapist", "flatmate",
    "swimming coach", "travel agent",
)
_NUMBER_THINGS = (
    "locker code", "door code of the office", "bike lock combination", "gate PIN",
    "safe combination", "garage code", "alarm code", "mailbox number", "parking permit number",
    "library card PIN",
)
_AMOUNT_THINGS = (
    "deposit for the flat", "quote for the roof repair", "budget for the wedding",
    "price of the used car", "fee for the language course", "insurance excess",
)
_EVENTS = (
    "flight", "dentist appointment", "wedding", "contract renewal", "driving test",
    "visa interview", "concert", "court hearing", "move to the new flat", "product launch",
    "family reunion", "knee surgery",
)
_CODE_THINGS = (
    "booking reference", "ticket number", "order number", "tracking code", "membership ID",
    "claim reference",
)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

FactMaker = Callable[[random.Random], tuple[str, str, str]]


def _name(rng: random.Random) -> tuple[str, str, str]:
    relation = rng.choice(_RELATIONS)
    value = rng.choice(_FIRST_NAMES)
    return f"my {relation}'s name", value, f"My {relation}'s name is {value}."


def _number(rng: random.Random) -> tuple[str, str, str]:
    thing = rng.choice(_NUMBER_THINGS)
    digits = rng.choice((4, 5, 6))
    value = str(rng.randint(10 ** (digits - 1), 10 ** digits - 1))
    return f"the {thing}", value, f"The {thing} is {value}."


def _amount(rng: random.Random) -> tuple[str, str, str]:
    thing = rng.choice(_AMOUNT_THINGS)
    value = f"{rng.randint(1, 98)},{rng.randint(0, 999):03d}"
    currency = rng.choice(("euros", "dollars", "pounds", "francs"))
    return f"the {thing}", value, f"The {thing} is {value} {currency}."


def _date(rng: random.Random) -> tuple[str, str, str]:
    event = rng.choice(_EVENTS)
    month = rng.randrange(12)
    day = rng.randint(1, 28)
    value = f"{day} {_MONTHS[month]} {rng.randint(2025, 2031)}"
    return f"the {event}", value, f"The {event} is on {value}."


def _code(rng: random.Random) -> tuple[str, str, str]:
    thing = rng.choice(_CODE_THINGS)
    while True:
        value = "".join(rng.choice(_CODE_ALPHABET) for _ in range(6))
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            break
    return f"my {thing}", value, f"My {thing} is {value}."


FACT_MAKERS: dict[str, FactMaker] = {
    "name": _name,
    "number": _number,
    "amount": _amount,
    "date": _date,
    "code": _code,
}
#: The default rotation of :func:`contextwindow.evaluate.recall.make_facts`.
FACT_KINDS = ("name", "number", "date", "code", "amount")


def random_fact(kind: str, rng: random.Random) -> tuple[str, str, str]:
    """``(subject, value, sentence)`` of a random fact of ``kind``."""
    maker = FACT_MAKERS.get(kind)
    if maker is None:
        raise ConfigError(f"unknown fact kind {kind!r}")
    return maker(rng)
