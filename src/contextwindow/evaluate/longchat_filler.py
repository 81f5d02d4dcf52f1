"""The everyday talk of :mod:`.longchat`: requests, small talk and the assistant's replies.

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

# domain: ((request, replies), ...): each reply answers its own request.
_TALK: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "cooking": (
        ("Any quick dinner ideas with {food} and {food}?",
         (("A {dish} works well: roast the {food} with garlic and a squeeze of lemon. It takes "
           "about forty minutes and most of it is hands-off."),
          ("Try a quick {dish} with the {food}, an onion and whatever herbs you have. {Tip}, and "
           "it comes together in half an hour."))),
        ("{Person} is coming over on {weekday}. What could I cook that isn't too fiddly?",
         (("A {dish} is hard to beat: you can make it the night before and just reheat it, "
           "which leaves you free to chat."),
          ("Go for something that sits in the oven, like a {dish}. Add a simple salad and some "
           "bread and nobody will notice you barely cooked."))),
        ("How long do {food} need in the oven?",
         (("Around 25 to 35 minutes at 200 degrees, depending on how big the pieces are. Turn "
           "them halfway so they colour evenly."),)),
        ("Can you give me a shopping list for a {dish} for {n} people?",
         (("Sure: {food}, {food}, two onions, garlic, a tin of tomatoes, stock and fresh herbs. "
           "Check the cupboard for oil and spices first."),)),
        ("I've got loads of {food} left over. What can I do with them before they go off?",
         (("Batch-cook them into a {dish} and freeze half. Soups and stews are the easiest way "
           "to use up a glut."),)),
    ),
    "work": (
        ("Can you help me word an email to {person} about {work_thing}?",
         (("Here's a draft: 'Hi, I wanted to check in about {work_thing}. Could we find twenty "
           "minutes this week?' Short and friendly usually lands best."),)),
        ("I've got {work_thing} due on {weekday} and haven't started. How do I break it up?",
         (("Start with a rough outline today, then block two focused hours a day until "
           "{weekday}. {Tip} -- it makes the rest feel smaller."),)),
        ("My manager wants {work_thing} redone. How do I not take it personally?",
         (("It helps to separate the feedback from yourself. Ask what the goal is, agree on "
           "the next step, and {tip}."),)),
        ("What's a polite way to say no to a meeting on {weekday}?",
         (("Something like: 'I can't make {weekday}, but I could do a short call later in the "
           "week, or reply by email if that's easier.' Offering an alternative softens it."),)),
        ("How do I ask {person} for feedback on {work_thing} without sounding needy?",
         (("Make it specific: ask for two things that work and one to improve. People find a "
           "narrow question much easier to answer."),)),
    ),
    "travel": (
        ("What should I pack for a long weekend in {city}?",
         (("For {city} I'd pack layers, comfortable shoes and a small umbrella. The centre is "
           "walkable, so you won't need much else."),)),
        ("Is the train or a flight better from {city} to {city}?",
         (("The train is often easier door to door: no security queue and you can work on the "
           "way. Book early for the cheaper fares."),)),
        ("{Person} says {city} is overrated. Is it worth a visit?",
         (("{City} has a lot going for it if you like food and walking. Two or three days is "
           "plenty for a first visit."),)),
        ("Any tips for a cheap hotel in {city}?",
         (("Look just outside the centre of {city}, near a tram or metro stop, and book a room "
           "with free cancellation so you can switch if prices drop."),)),
        ("How early should I get to the airport for a morning flight?",
         (("Two hours before a European flight is plenty, a bit more if you're checking a bag. "
           "Check in online the night before."),)),
    ),
    "pets": (
        ("Why do some {animal}s {behaviour}?",
         (("It's quite common. A {animal} often does it out of boredom or habit, so more "
           "exercise and a few puzzle toys usually help."),)),
        ("My neighbour's {animal} keeps trying to {behaviour}. How do I bring it up politely?",
         (("A friendly chat works best: mention it casually and suggest a fix together. Most "
           "owners are glad to know."),)),
        ("What's a good name for a {animal}? {Person} wants something silly.",
         (("How about Sir Wobbles, Captain Crumpet or Noodle? Silly names tend to stick, so "
           "pick one you'll be happy shouting in a park."),)),
        ("How often should a {animal} see the vet?",
         (("Once a year for a check-up is the usual advice, plus vaccinations when they're "
           "due. Older animals may need more."),)),
        ("{Person} is thinking of getting a {animal}. What should they know first?",
         (("The time commitment is the big one, then the costs: food, insurance and vet bills. "
           "Meeting a few first helps them pick the right temperament."),)),
    ),
    "health": (
        ("I've had {ailment} for a few days. Should I see someone or just rest?",
         (("If it lasts more than a week or gets worse, it's worth seeing someone. Meanwhile "
           "rest, fluids and gentle movement help."),)),
        ("How do I stop dreading the {health_pro}?",
         (("Telling the {health_pro} you're nervous really helps; they deal with it all the "
           "time. Booking the first slot of the day means less waiting."),)),
        ("Any stretches for {ailment} after a day at the desk?",
         (("Try slow neck rolls, a doorway chest stretch and a short walk every hour. Little "
           "and often beats one long session."),)),
        ("{Person} has {ailment} again. What helps besides tea?",
         (("Rest, plenty of water and a warm shower can all help. If it keeps coming back, a "
           "chat with a doctor is worth it."),)),
    ),
    "home": (
        ("{House_thing} is acting up again. What can I check before calling someone?",
         (("Check the obvious first: power, the fuse and any reset button. If {house_thing} "
           "still won't behave, take a photo of the error and call someone."),)),
        ("How often should you clean {house_thing}?",
         (("Every month or two is plenty for most homes. A quick wipe more often stops grime "
           "building up."),)),
        ("The landlord still hasn't fixed {house_thing}. How do I chase it?",
         (("Put it in writing: a short email with the date you first reported it and a photo. "
           "Landlords tend to move faster once there's a paper trail."),)),
        ("What's the easiest way to get the flat tidy before {person} visits on {weekday}?",
         (("Do one room at a time and start with surfaces. Twenty minutes with a timer gets "
           "more done than you'd think."),)),
    ),
    "tech": (
        ("My laptop keeps {tech_issue}. Any ideas?",
         (("Try a restart, then check for updates and anything running at start-up. If it "
           "keeps {tech_issue}, a clean reinstall often fixes it."),)),
        ("How do I set up a shared calendar with {person}?",
         (("Most calendar apps let you share one by email: create it, add the other person and "
           "choose whether they can edit."),)),
        ("Can you explain {tech_term} in simple terms?",
         (("In short, {tech_term} adds a layer of protection to your accounts and data. It's "
           "worth setting up once and then forgetting about."),)),
        ("My phone keeps {tech_issue}. Is it time for a new one?",
         (("Not necessarily: clear some storage, update it and check which apps use the most "
           "battery. If it's more than five years old, though, an upgrade may be worth it."),)),
    ),
    "hobbies": (
        ("I'm thinking of taking up {activity}. What do I need to start?",
         (("For {activity} you don't need much to begin with. {Tip}, and join a beginners' "
           "group so it stays fun."),)),
        ("Any tips for getting better at {activity} without getting bored?",
         (("Mix it up: set a small goal each week and track it. Doing {activity} with a friend "
           "helps a lot with motivation."),)),
        ("{Person} wants me to try {activity} with them on {weekday}. Is it hard for beginners?",
         (("Not at all, most people pick up the basics in a session or two. Go easy the first "
           "time and ask lots of questions."),)),
        ("How do I fit {activity} into a busy week?",
         (("Twenty minutes three times a week is a good start. Put it in your calendar like a "
           "meeting and protect it."),)),
    ),
    "media": (
        ("Can you recommend a {genre} book for a long train ride?",
         (("For {genre}, I'd go for something with short chapters on a train: easy to pick up "
           "and put down. Want a few titles?"),)),
        ("I finished that {genre} series everyone talks about. What should I watch next?",
         (("If you liked that, try another {genre} series with a slow-burn plot. The first "
           "episode is usually the weakest, so give it two."),)),
        ("Is there a good {genre} podcast for the commute?",
         (("There are plenty of {genre} podcasts with short episodes that fit a commute. Try a "
           "couple and keep the one whose host you like."),)),
    ),
    "language": (
        ("How do I say '{phrase}' in {language}?",
         (("In {language} it's quite a short phrase; I can write it out with the pronunciation "
           "if you like. Ten minutes a day beats an hour on Sunday."),)),
        ("What's a good way to practise {language} every day?",
         (("Little and often: flashcards on the bus, a podcast while cooking, and one short "
           "conversation a week if you can find a partner."),)),
        ("{Person} is learning {language}. Any apps you'd suggest?",
         (("A flashcard app for vocabulary plus a podcast for listening is a good pair. "
           "Speaking with someone once a week matters more than the app."),)),
    ),
    "planning": (
        ("Help me plan my {weekday}: {task}, {task} and {task}.",
         (("Here's a rough plan: the errands first thing, the longer task after lunch, and "
           "something nice in the evening. {Tip}."),)),
        ("What's a nice thing to do for {person}'s birthday?",
         (("A small experience often beats a present: a dinner out, a class together or a day "
           "trip. Add a handwritten card."),)),
        ("I keep putting off {task}. Any tricks?",
         ("Break it into a five-minute first step and do just that. Momentum does the rest.",)),
        ("Can you make me a to-do list for the weekend? I've got {task} and {task} to fit in.",
         (("Saturday morning: {task}. Saturday afternoon: the other one. Sunday: nothing at "
           "all, which is also on the list."),)),
    ),
    "smalltalk": (
        ("Ugh, {weather} again today.",
         ("Perfect weather for staying in with a book, at least!",
          "It has to clear up eventually. Fingers crossed for the weekend.")),
        ("Long week. {Person} and I spent {weekday} evening on {activity}.",
         ("Sounds like a lot! A quiet evening might be in order.",)),
        ("Just back from {errand}, it took forever.",
         ("Oh no. At least it's done now -- time for a cup of tea?",)),
        ("I'm so tired today, I barely slept.",
         ("That's rough. An early night and a short walk tomorrow might help.",)),
        ("Guess who ran into {person} at {errand}? Me.",
         ("Ha, small world. Hope it was a nice surprise.",)),
    ),
}
_FOLLOW_UPS = ("Thanks, that helps.", "Perfect, I'll try that.", "Great, thank you!",
               "Makes sense.", "Ok, and how long would that take?", "Nice, I'll give it a go.")
_FOLLOW_REPLIES = ("You're welcome -- let me know how it goes.", "Happy to help!",
                   "Anytime. Shout if you want more ideas.",
                   "Usually under an hour, less once you've done it once.")
DOMAINS = tuple(_TALK)
_CLOSERS = ("", "", "", " Want me to go into more detail?", " Let me know how it goes.",
            " I can write out the steps if that helps.", " Shout if you want a second option.",
            " Happy to adjust it if something doesn't fit your week.")
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
    text, replies = rng.choice(_TALK[rng.choice(DOMAINS)])
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
