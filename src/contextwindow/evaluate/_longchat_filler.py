"""The everyday talk of :mod:`.longchat`: slot vocabularies and how requests and replies are
filled in (the request / reply pairs themselves are in :mod:`.longchat_talk`).

Most of a long chat is not about the facts a later question needs, and a good deal of it uses
the same words (dogs, sisters, the dentist, trips, work, weekdays): retrieval has to tell
"my neighbour's dog keeps digging" from "our dog Pepper", as it would in a real chat. Texts
are templates over shared slot vocabularies (``{slot}`` draws a value, ``{Slot}`` draws it
capitalised); :func:`render` fills them from a seeded ``random.Random``, and a reply reuses
the values its request drew (the city asked about is the city answered about).
"""

from __future__ import annotations

import random
import re

from ._longchat_talk import TALK

__all__ = ["NAMES", "SLOTS", "articles", "exchange", "render", "reply", "request"]

NAMES = (
    "Ingrid", "Tomasz", "Aiko", "Rafael", "Oluwaseun", "Margit", "Dmitri", "Priya", "Lucien",
    "Saoirse", "Kwame", "Yolanda", "Henrik", "Mei", "Bartholomew", "Ximena", "Anselm", "Farida",
    "Leopold", "Noor", "Casimir", "Thandiwe", "Evander", "Rosalind", "Ignatius", "Zofia",
    "Osvaldo", "Marisol", "Fintan", "Ottilie", "Benedikt", "Anneliese", "Kofi", "Wilhelmina",
    "Emrys", "Svetlana", "Dagny", "Cosimo", "Itzel", "Rhiannon", "Tobias", "Esperanza", "Jonas",
    "Marta", "Callum", "Niamh", "Idris", "Beatrix", "Soren", "Lavinia", "Matteo", "Ines",
)
CITIES = (
    "Lisbon", "Ghent", "Porto", "Leeds", "Bristol", "Valencia", "Krakow", "Bologna", "Lyon",
    "Galway", "Tallinn", "Ljubljana", "Seville", "Utrecht", "Bergen", "Dundee", "Trieste",
    "Marseille", "Cork", "Salzburg", "Bruges", "Gdansk", "Aarhus", "Nantes", "Granada",
    "Innsbruck", "Turin", "Basel", "York", "Cardiff", "Riga", "Vilnius", "Malaga", "Bilbao",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

SLOTS: dict[str, tuple[str, ...]] = {
    "name": NAMES,
    "city": CITIES,
    "weekday": WEEKDAYS,
    "person": ("my sister", "my brother", "my boss", "a colleague", "my neighbour", "my cousin",
               "my friend from uni", "my mum", "my dad", "my flatmate", "my partner",
               "a friend of mine", "my team lead", "my aunt"),
    "food": ("leeks", "feta", "chickpeas", "sweet potatoes", "salmon", "mushrooms", "tofu",
             "halloumi", "spinach", "lentils", "aubergines", "chorizo", "squash", "cauliflower",
             "prawns", "couscous", "courgettes", "black beans", "gnocchi", "paneer"),
    "dish": ("traybake", "risotto", "curry", "frittata", "stew", "stir-fry", "pasta bake",
             "salad bowl", "soup", "tart"),
    "animal": ("dog", "cat", "rabbit", "puppy", "kitten", "parrot", "hamster", "terrier"),
    "behaviour": ("dig under the fence", "bark at the postman", "chew shoes", "howl at night",
                  "steal socks", "refuse to go out in the rain", "sleep all afternoon"),
    "work_thing": ("the quarterly report", "a slide deck for the client", ("the budget "
    "spreadsheet"), "my performance review", "the project plan", ("a grant "
    "application"), "the handover notes", "the team newsletter"),
    "house_thing": ("the boiler", "the washing machine", "the kitchen tap", "the garden gate",
                    "the dishwasher", "the bathroom fan", "the fridge", "the doorbell"),
    "ailment": ("a sore throat", "a stiff neck", "a headache", "a cough", "a sore knee",
                "trouble sleeping"),
    "health_pro": ("dentist", "doctor", "physio", "optician", "nurse"),
    "activity": ("running", "yoga", "swimming", "baking", "gardening", "chess", "painting",
                 "cycling", "knitting", "hiking", "photography", "climbing", "journaling"),
    "genre": ("crime", "sci-fi", "historical", "fantasy", "non-fiction", "thriller", "comedy"),
    "language": ("Spanish", "Italian", "German", "French", "Greek", "Polish", "Swedish"),
    "phrase": ("where is the station", "the bill, please", "nice to meet you",
               "I'm running late", "how much is this"),
    "tech_issue": ("freezing when I open the browser", "losing the wifi", "running hot",
                   "asking for updates every day", "draining the battery"),
    "tech_term": ("a VPN", "two-factor authentication", "cloud backup", "a password manager",
                  "an API"),
    "weather": ("rain", "drizzle", "fog", "wind", "grey skies", "sleet"),
    "errand": ("the post office", "the supermarket", "the bank", "the garden centre",
               "the pharmacy", "the tip"),
    "task": ("the food shop", "the laundry", "answering emails", "a haircut",
             "calling the bank", "tidying the shed", "paying the bills", "returning a parcel"),
    "n": ("two", "three", "four", "five", "six", "ten", "twenty", "fifteen"),
    "tip": ("keep it simple", "prep everything first", "start small", "write it down",
            "do the hardest part first", "set a timer", "ask for feedback early"),
}

_FOLLOW_UPS = ("Thanks, that helps.", "Perfect, I'll try that.", "Great, thank you!",
               "Makes sense.", "Ok, and how long would that take?", "Nice, I'll give it a go.")
_FOLLOW_REPLIES = ("You're welcome -- let me know how it goes.", "Happy to help!",
                   "Anytime. Shout if you want more ideas.",
                   "Usually under an hour, less once you've done it once.")
DOMAINS = tuple(TALK)
_CLOSERS = ("", "", "", " Want me to go into more detail?", " Let me know how it goes.",
            " Hope that helps!", " Shout if you want a second option.",
            " Happy to suggest alternatives too.")
_SLOT = re.compile(r"\{(\w+)\}")
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")

Drawn = dict[str, list[str]]


def articles(text: str) -> str:
    """``a`` before a vowel made ``an`` ("an archivist")."""
    return _ARTICLE.sub(lambda m: m.group(1) + "n ", text)


def render(template: str, rng: random.Random, drawn: Drawn | None = None, *,
           reuse: bool = False) -> str:
    """``template`` with each ``{slot}`` drawn from :data:`SLOTS` (``{Slot}``: capitalised),
    the values recorded in ``drawn``; with ``reuse``, a slot already in ``drawn`` takes its
    first value instead."""
    drawn = {} if drawn is None else drawn

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        slot = key.lower()
        if reuse and drawn.get(slot):
            value = drawn[slot][0]
        else:
            value = rng.choice(SLOTS[slot])
            drawn.setdefault(slot, []).append(value)
        return value[0].upper() + value[1:] if key[0].isupper() else value

    return articles(_SLOT.sub(fill, template))


def request(rng: random.Random) -> tuple[str, tuple[str, ...], Drawn]:
    """A user request (or remark), the replies that answer it, and the slot values it drew."""
    text, replies = rng.choice(TALK[rng.choice(DOMAINS)])
    drawn: Drawn = {}
    return render(text, rng, drawn), replies, drawn


def reply(rng: random.Random, replies: tuple[str, ...], drawn: Drawn) -> str:
    """One of ``replies``, reusing the values its request drew."""
    return render(rng.choice(replies), rng, drawn, reuse=True) + rng.choice(_CLOSERS)


def exchange(rng: random.Random) -> list[tuple[str, str]]:
    """One filler exchange as ``(role, text)`` pairs: a request and its answer, sometimes
    with a short follow-up."""
    text, replies, drawn = request(rng)
    out = [("user", text), ("assistant", reply(rng, replies, drawn))]
    if rng.random() < 0.25:
        out += [("user", rng.choice(_FOLLOW_UPS)), ("assistant", rng.choice(_FOLLOW_REPLIES))]
    return out
