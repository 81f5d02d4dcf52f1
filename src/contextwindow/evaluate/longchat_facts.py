"""The facts of :mod:`.longchat`: what the user says once in passing, and what is asked later.

Four kinds of question, each drawn from its own table:

* ``single`` -- one statement answers it ("our dog Pepper ate half a sock" -> "What is my dog
  called?");
* ``multi`` -- two statements are needed: a bridge ("my cousin Marta ..." then "Marta just
  qualified as a radiographer" -> "What does my cousin do for work?") or a list ("I'm off to
  Ghent for work" ... "back from the Porto work trip" -> both cities);
* ``temporal`` -- *when*: an event said to happen "today" (the answer is that session's date)
  or a stated date ("the half marathon is on 14 June");
* ``updated`` -- a value said, then corrected sessions later ("actually it's Thursday, not
  Tuesday"): the latest value is the answer.

Questions are phrased differently from the statements (the words people use when asking, not
when telling). Each value is used by one fact only, so finding it in a context means finding
that fact. Templates: ``{v}`` the value, ``{old}`` the corrected value, ``{s}`` a subject,
``{name}`` / ``{rel}`` a bridge's person.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import ConfigError
from ._longchat_filler import CITIES, NAMES, WEEKDAYS

__all__ = ["KINDS", "Plan", "Pools", "draw_plans"]

KINDS = ("single", "multi", "temporal", "updated")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")

VALUES: dict[str, tuple[str, ...]] = {
    "name": NAMES, "city": CITIES, "weekday": WEEKDAYS,
    "date": tuple(f"{d} {m}" for m in MONTHS for d in range(1, 29)),
    "code": tuple(str(n) for n in range(2000, 9999, 37)),
    "amount": tuple(f"{n},000" for n in range(6, 40)),
    "dog": ("Pepper", "Biscuit", "Mochi", "Juniper", "Bramble", "Ziggy", "Waffles", "Pickle",
            "Nutmeg", "Bruno", "Clementine", "Rocket"),
    "cat": ("Miso", "Noodle", "Smudge", "Pixel", "Mittens", "Salem", "Figaro", "Pumpkin",
            "Sushi", "Marmalade"),
    "job": ("radiographer", "sound engineer", "actuary", "landscape architect", "paramedic",
            "tax adviser", "sommelier", "translator", "pharmacist", "locksmith", "archivist",
            "midwife", "air traffic controller", "structural engineer", "florist",
            "speech therapist"),
    "allergen": ("peanuts", "shellfish", "penicillin", "kiwi", "sesame", "latex", "walnuts",
                 "mustard"),
    "car": ("Skoda", "Volvo", "Fiat", "Toyota", "Renault", "Subaru", "Mazda", "Peugeot", "Kia"),
    "instrument": ("cello", "ukulele", "trumpet", "harp", "banjo", "accordion", "clarinet"),
    "drink": ("matcha", "chai", "double espresso", "rooibos", "kombucha", "hot lemon water"),
    "cuisine": ("Ethiopian", "Georgian", "Sichuan", "Peruvian", "Lebanese", "Vietnamese",
                "Oaxacan"),
    "tongue": ("Portuguese", "Japanese", "Welsh", "Turkish", "Dutch", "Icelandic", "Finnish"),
    "company": ("Northwind", "Brightwell", "Halcyon Labs", "Fernhill", "Quillmark", "Oakridge",
                "Stonebridge", "Marigold Health"),
    "venue": ("the Crown and Anchor", "Luigi's", "the Boathouse", "the Old Library",
              "Cafe Marlowe", "the Fox and Hound", "the Orangery"),
    "hobby": ("bouldering", "pottery", "fencing", "salsa", "rowing", "beekeeping",
              "birdwatching", "woodturning", "calligraphy", "archery"),
    "restaurant": ("Osteria Vela", "Sakura Garden", "El Farolito", "the Copper Pot",
                   "Bistro Lune", "Mezze House", "Golden Lotus", "Casa Ines"),
    "book": ("The Salt Road", "A Winter Orchard", "Paper Lanterns", "The Glass Cartographer",
             "Seven Quiet Rivers", "The Last Ferry", "Moth Season", "Under the Linden"),
}

# topic: (value pool, statements, questions)
SINGLE: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "dog": ("dog", ("{v}, our beagle, had me up at five again",
                    "I walked {v} twice today, that dog never runs out of energy",
                    "our dog {v} ate half a sock this morning"),
            ("What is my dog called?", "What's the name of our dog?")),
    "cat": ("cat", ("my cat {v} has decided my keyboard is her bed",
                    "{v}, the cat, knocked a mug off the table last night",
                    "we've had our tabby {v} for three years now"),
            ("What's my cat's name?", "What do we call our cat?")),
    "job": ("job", ("since I started working as a {v} my weekends have disappeared",
                    "being a {v} means I'm on my feet most of the day",
                    "I've been a {v} for about six years now and still love it"),
            ("What do I do for a living?", "What is my profession?")),
    "hometown": ("city", ("I grew up in {v}, so this weather feels mild to me",
                          "back home in {v} nobody eats dinner before nine",
                          "my parents still live in the house in {v} where I was born"),
                 ("Where am I originally from?", "In which city did I grow up?")),
    "allergy": ("allergen", ("I'm allergic to {v}, so I check every label",
                             "I found out the hard way that I react badly to {v}",
                             "careful with recipes, {v} gives me hives"),
                ("What am I allergic to?", "Which allergy should you keep in mind for me?")),
    "sister": ("name", ("my sister {v} is staying with us this week",
                        "{v}, my little sister, just got engaged",
                        "I had a long call with my sister {v} last night"),
               ("What is my sister's name?", "What's my sister called?")),
    "partner": ("name", ("my partner {v} is away at a conference",
                         "{v}, my husband, did the washing up for once",
                         "{v}, my wife, thinks I work too much"),
                ("What is my partner's name?", "Who am I married to?")),
    "son": ("name", ("my son {v} lost another glove at school",
                     "{v}, my youngest, has a cold so I'm working from home"),
            ("What's my son called?", "What is the name of my child?")),
    "instrument": ("instrument", ("I've been practising the {v} every evening",
                                  "my {v} teacher says I'm finally improving"),
                   ("Which instrument am I learning?", "What instrument do I play?")),
    "drink": ("drink", ("I can't start the day without a {v}",
                        "my first {v} of the day is sacred"),
              ("What do I drink first thing in the morning?", "What's my morning drink?")),
    "tongue": ("tongue", ("I've been doing {v} lessons on the bus",
                          "my {v} is still terrible, but the app says I'm on a streak"),
               ("Which language am I studying?", "What language have I been learning?")),
    "hobby": ("hobby", ("I've joined a {v} club that meets after work",
                        "{v} is the only thing that clears my head these days"),
              ("What hobby did I take up?", "What do I do to switch off?")),
}
# topic: (value pool, statements, corrections, questions); ``visit`` comes once per visitor.
UPDATED: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "visit": ("weekday", ("the {s} is booked for {v}", "{v} is when the {s} is coming round"),
              ("the {s} rang, actually it's {v}, not {old}",
               "small change: the {s} can't do {old}, so it's {v} now"),
              ("What day is the {s} coming?", "Which day should I expect the {s}?")),
    "home": ("city", ("we rent a small flat in {v}", "living in {v} means my commute is short"),
             ("we've finally moved from {old} to {v}", "the move is done, we live in {v} now"),
             ("Which city do I live in now?", "Where is home for me at the moment?")),
    "employer": ("company", ("I've worked at {v} since I left university",),
                 ("I handed in my notice at {old}, I start at {v} next month",
                  "the new job at {v} is going well, much better than {old}"),
                 ("Which company do I work for now?", "Who is my current employer?")),
    "car": ("car", ("we drive an old {v} that smells of wet dog",),
            ("we sold the {old} and bought a {v}",),
            ("What car do we drive now?", "Which make is our car these days?")),
    "locker": ("code", ("my gym locker code is {v}, note to self",),
               ("the gym reset the lockers, my code is {v} now",),
               ("What is my current gym locker code?", "Which code opens my locker?")),
    "cuisine": ("cuisine", ("{v} food is my absolute favourite",),
                ("I've gone off {old} a bit, {v} is my favourite now",),
                ("What's my favourite cuisine these days?",)),
    "party": ("venue", ("we've booked {v} for dad's retirement party",),
              ("change of plan, dad's party is at {v} instead of {old}",),
              ("Where is my father's retirement do being held?",)),
    "kitchen": ("amount", ("the budget for the kitchen is {v} pounds",),
                ("the quotes came in, so the kitchen budget is {v} pounds now",),
                ("How much money can we spend on the kitchen?",)),
    "kitten": ("cat", ("we've called the new kitten {v}",),
               ("we renamed the kitten {v}, {old} just didn't suit her",),
               ("What is the kitten called now?",)),
    "wedding": ("date", ("my cousin's wedding is on {v}",),
                ("the wedding has moved to {v} because the venue double-booked",),
                ("What's the date of my cousin's wedding?",)),
    "manager": ("name", ("my new manager is called {v}, seems nice so far",),
                ("{old} has left, so {v} is my manager now",),
                ("Who do I report to at work these days?",)),
}
VISITORS = ("plumber", "electrician", "piano tuner", "window cleaner", "boiler engineer")
# Events said to happen "today": (statement, questions); the answer is the session's date.
EVENTS = (
    ("I finally passed my driving test today",
     ("When did I pass my driving test?", "When did I get my driving licence?")),
    ("we picked up the new puppy this morning",
     ("When did we bring the puppy home?", "When did our new dog arrive?")),
    ("I ran my first 10k this morning",
     ("On what date did I run my first 10k?", "When was my first ten-kilometre race?")),
    ("I handed in my notice today, scary but exciting", ("When did I resign?",)),
    ("planted the apple tree in the garden today",
     ("When did I plant the apple tree?", "When did the fruit tree go into the garden?")),
    ("just booked the flights for the summer",
     ("When did I book our summer flights?",
      "When did I sort out the plane tickets for our holiday?")),
    ("got my braces off today",
     ("When did I have my braces removed?", "When did the orthodontist finish my treatment?")),
    ("signed the papers for the allotment today",
     ("When did I get the allotment?", "When did I take on the vegetable plot?")),
    ("we painted the spare room this afternoon",
     ("When did we paint the spare room?", "When did we redecorate the guest room?")),
    ("my grandmother turned ninety today",
     ("When was my grandmother's ninetieth birthday?", "When did my gran turn 90?")),
    ("I sold my old bike this morning",
     ("On which date did I sell my old bike?", "When did I get rid of my old bicycle?")),
    ("got the keys to the new studio today",
     ("When did I get the keys to the studio?", "When did the new studio become mine?")),
)
# Stated dates: (statement with {v}, questions); the answer is the date.
DATED = (
    ("my dentist appointment is on {v}",
     ("When do I see the dentist?", "What's the date of my next dental check-up?")),
    ("my passport renewal appointment is on {v}",
     ("What date is my passport appointment?", "When do I go in about renewing my passport?")),
    ("the half marathon is on {v}, so I need to start training",
     ("When is the race I'm training for?", "What date is the half marathon?")),
    ("mum's sixtieth is on {v}",
     ("When is my mother's 60th birthday?", "What's the date of mum's big birthday?")),
    ("our anniversary is on {v}",
     ("What date is our anniversary?", "When is our wedding anniversary?")),
    ("the school play is on {v}",
     ("When is the school play?", "What date is my child's performance at school?")),
    ("the car is booked in for its service on {v}",
     ("When does the car go to the garage?", "What date is the car's service?")),
)
RELATIONS = ("cousin", "best friend", "boss", "neighbour", "uncle", "flatmate", "godmother",
             "old school friend", "mentor")
INTRODUCTIONS = ("my {rel} {name} sent me the funniest video", ("{name}, my {rel}, is coming "
                 "round later"), "had a long call with {name}, my {rel}, last night")
# attribute: (value pool, statements about {name}, questions about my {rel})
BRIDGES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "job": ("job", ("{name} just qualified as a {v}",
                    "{name} says being a {v} is much harder than it looks"),
            ("What does my {rel} do for work?", "What is my {rel}'s job?")),
    "city": ("city", ("{name} has just moved to {v}",
                      "{name} keeps inviting me to visit {v}, that's where they live now"),
             ("Which city does my {rel} live in?", "Where does my {rel} live?")),
    "pet": ("dog", ("{name}'s dog {v} is the size of a small pony",
                    "{name} is bringing {v}, their dog, to the barbecue"),
            ("What's the name of my {rel}'s dog?",)),
    "hobby": ("hobby", ("{name} has got really into {v} lately",
                        "{name} wants me to try {v} with them"),
              ("Which hobby is my {rel} into?", "What does my {rel} do for fun?")),
}
# topic: (value pool, statements, question); two statements, both values are the answer.
LISTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "work_trips": ("city", ("I'm off to {v} for work next week",
                            "just back from the work trip to {v}, exhausted"),
                   "Which cities have I travelled to for work?"),
    "restaurants": ("restaurant", ("we tried {v} for dinner, the portions were huge",
                                   "{v} was lovely last night, we'll go back"),
                    "Which restaurants have we been to for dinner?"),
    "book_club": ("book", ("our book club is reading '{v}' this month",
                           "finished '{v}' for book club, the ending was odd"),
                  "Which books has my book club read?"),
}


@dataclass(frozen=True, slots=True)
class Plan:
    """One question and the statements it needs, before they are placed in sessions.

    ``ordered``: the statements must be said in this order, sessions apart (a correction
    after what it corrects). ``on_session_date``: the answer is the date of the session of
    the (only) statement, filled in when it is placed.
    """

    kind: str
    topic: str
    question: str
    statements: tuple[str, ...]
    answer: str = ""
    values: tuple[str, ...] = ()
    stale: str | None = None
    ordered: bool = False
    on_session_date: bool = False


class Pools:
    """Values drawn without replacement across the whole conversation, and used topics."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self.topics: set[str] = set()

    def draw(self, pool: str, k: int = 1) -> list[str]:
        free = [v for v in VALUES[pool] if v not in self.used]
        if len(free) < k:
            raise LookupError(pool)
        values = self.rng.sample(free, k)
        self.used.update(values)
        return values

    def topic(self, names: list[str], prefix: str = "") -> str:
        free = [name for name in names if prefix + name not in self.topics]
        if not free:
            raise LookupError(prefix)
        name = self.rng.choice(free)
        self.topics.add(prefix + name)
        return name


def _single(pools: Pools) -> Plan:
    topic = pools.topic(list(SINGLE))
    pool, says, asks = SINGLE[topic]
    (value,) = pools.draw(pool)
    say = pools.rng.choice(says).format(v=value)
    return Plan("single", topic, pools.rng.choice(asks), (say,), value, (value,))


def _updated(pools: Pools) -> Plan:
    rng = pools.rng
    topic, _, subject = pools.topic(
        [t for t in UPDATED if t != "visit"] + [f"visit:{s}" for s in VISITORS]).partition(":")
    pool, says, corrects, asks = UPDATED[topic]
    old, new = pools.draw(pool, 2)
    first = rng.choice(says).format(v=old, s=subject)
    second = rng.choice(corrects).format(v=new, old=old, s=subject)
    return Plan("updated", topic, rng.choice(asks).format(s=subject), (first, second), new,
                (new,), stale=old, ordered=True)


def _temporal(pools: Pools) -> Plan:
    rng = pools.rng
    if rng.random() < 0.5:
        index = int(pools.topic([str(k) for k in range(len(EVENTS))], "event:"))
        say, asks = EVENTS[index]
        return Plan("temporal", f"event:{index}", rng.choice(asks), (say,),
                    on_session_date=True)
    index = int(pools.topic([str(k) for k in range(len(DATED))], "dated:"))
    say, asks = DATED[index]
    (value,) = pools.draw("date")
    return Plan("temporal", f"dated:{index}", rng.choice(asks), (say.format(v=value),), value,
                (value,))


def _multi(pools: Pools) -> Plan:
    rng = pools.rng
    if rng.random() < 0.7:
        relation = pools.topic(list(RELATIONS), "relation:")
        attribute = rng.choice(list(BRIDGES))
        pool, says, asks = BRIDGES[attribute]
        name, value = pools.draw("name")[0], pools.draw(pool)[0]
        intro = rng.choice(INTRODUCTIONS).format(rel=relation, name=name)
        about = rng.choice(says).format(name=name, v=value)
        statements = (intro, about) if rng.random() < 0.7 else (about, intro)
        return Plan("multi", f"bridge:{attribute}", rng.choice(asks).format(rel=relation),
                    statements, value, (value,))
    topic = pools.topic(list(LISTS), "list:")
    pool, says, ask = LISTS[topic]
    values = pools.draw(pool, 2)
    told = tuple(rng.choice(says).format(v=v) for v in values)
    return Plan("multi", f"list:{topic}", ask, told, " and ".join(values), tuple(values))


_DRAW = {"single": _single, "multi": _multi, "temporal": _temporal, "updated": _updated}


def draw_plans(rng: random.Random, counts: dict[str, int]) -> tuple[list[Plan], set[str]]:
    """The plans for ``counts`` questions per kind, and every value they reserve (which the
    rest of the conversation must not mention)."""
    pools = Pools(rng)
    plans = []
    for kind, count in counts.items():
        if kind not in _DRAW:
            raise ConfigError(f"unknown question kind {kind!r}; expected one of {KINDS}")
        for _ in range(count):
            for _attempt in range(20):
                try:
                    plans.append(_DRAW[kind](pools))
                    break
                except LookupError:
                    continue
            else:
                raise ConfigError(f"cannot make {count} {kind!r} questions with distinct "
                                  "topics and values; ask for fewer")
    return plans, pools.used
