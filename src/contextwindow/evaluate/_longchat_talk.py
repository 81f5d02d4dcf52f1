"""What the user asks the assistant about, and how it answers, in :mod:`.longchat`.

Each domain holds ``(request, replies)`` pairs: a reply answers its own request, reusing the
slot values the request drew (see :func:`._longchat_filler.render`). The ``life`` domain talks
about the same things the facts do (plumbers, driving tests, kittens, book clubs) without
stating any fact, so that a word shared by a question and a fact is shared by filler too.
"""

from __future__ import annotations

__all__ = ["TALK"]

# domain: ((request, replies), ...): each reply answers its own request.
TALK: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
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
    "life": (
        ("How much should a plumber charge to fix a dripping tap?",
         (("It varies by area, but a small job like that is usually a call-out fee plus half "
           "an hour. Get two quotes if it isn't urgent."),)),
        ("Do I need an electrician to change a light fitting?",
         (("For a like-for-like swap many people do it themselves with the power off at the "
           "fuse box, but if there's any doubt an electrician is the safe choice."),)),
        ("How often should the boiler be serviced?",
         (("Once a year is the usual advice, ideally before winter. Keep the paperwork, some "
           "insurers ask for it."),)),
        ("Our piano sounds off. How often does a piano need tuning?",
         (("Once or twice a year for a home piano, and after a move. Humidity changes make it "
           "drift faster."),)),
        (("{Person} is learning to drive. How many lessons does it usually take to pass the "
          "test?"),
         (("Most learners need somewhere between thirty and fifty hours, plus private practice. "
           "Mock tests help a lot with nerves."),)),
        ("How do I train for a 10k without hurting my knees?",
         (("Build up slowly, about ten percent more distance a week, and mix in rest days and "
           "some strength work for the legs."),)),
        ("When's the best time to plant fruit trees?",
         (("Late autumn to early spring, while the tree is dormant. Water it well for the "
           "first summer."),)),
        ("What colour works for a small room with little light?",
         (("Warm whites or pale neutrals keep it bright; a darker shade on one wall can make it "
           "feel cosy rather than cramped."),)),
        ("Is it cheaper to book flights on a {weekday}?",
         (("Not reliably any more; booking a few weeks ahead and being flexible on dates "
           "matters far more than the day you book."),)),
        ("How do you sell a bike online safely?",
         (("Meet somewhere public, take photos of the frame number, and only hand it over once "
           "the payment has cleared."),)),
        ("Any tips for someone starting an allotment?",
         (("Start with one bed and easy crops like potatoes, beans and courgettes. Cover the "
           "rest to keep weeds down until you're ready."),)),
        ("What do you get someone who's turning ninety?",
         (("Something personal: a photo book, a visit from family, or a favourite meal. At that "
           "age time together usually matters most."),)),
        ("How long do braces usually stay on?",
         (("Typically one to two years, depending on what needs correcting. A retainer "
           "afterwards keeps the teeth in place."),)),
        ("How do I hand in my notice without burning bridges?",
         (("Tell your manager in person first, follow up in writing, and offer a solid "
           "handover. Keep the tone grateful."),)),
        ("What should I check before renting a studio flat?",
         (("Water pressure, heating, phone signal and storage. Ask what the bills come to and "
           "read the inventory carefully."),)),
        ("How do I get a puppy to sleep through the night?",
         (("A crate near your bed, a last toilet break late in the evening and a calm routine. "
           "Most puppies settle within a couple of weeks."),)),
        ("How long does a passport renewal take at the moment?",
         (("Usually a few weeks, longer before the summer rush. Apply well ahead of any trip "
           "and check the photo rules."),)),
        ("What should I eat the night before a long race?",
         (("Something familiar and carb-heavy, like pasta or rice, and not too late. Nothing "
           "new on race week."),)),
        ("Any ideas for a sixtieth birthday present?",
         (("An experience works well: a concert, a tasting, a weekend away. Or a framed photo "
           "of something that matters to them."),)),
        ("Ideas for an anniversary dinner at home?",
         (("Cook the meal you had on a first date, or try a new cuisine together. Candles and "
           "no phones do the rest."),)),
        ("How often does a car need a service?",
         (("Roughly once a year or every ten to fifteen thousand miles, whichever comes first. "
           "The handbook has the exact schedule."),)),
        ("What's a good gift for a colleague's retirement party?",
         (("Something for the hobby they'll have time for now, plus a card everyone signs. "
           "A group present goes further."),)),
        ("How do I plan a budget for a kitchen renovation?",
         (("Get three quotes, add fifteen percent for surprises, and decide early where you "
           "won't compromise: usually worktops and storage."),)),
        ("How do I get along with a new manager?",
         (("Ask early how they like updates and what success looks like to them. A short "
           "weekly check-in builds trust quickly."),)),
        ("Is it worth moving to a new city for a job?",
         (("It can be, if the role and the place both appeal. Visit for a weekend first and "
           "price up rent and commuting."),)),
        ("How do I settle a nervous kitten in a new home?",
         (("Give it one quiet room at first with food, water, a litter tray and somewhere to "
           "hide. Let it come to you."),)),
        ("How do you keep a book club going?",
         (("Take turns choosing, keep the books short-ish, and always have snacks. A loose "
           "schedule beats a strict one."),)),
        ("How do I make the most of a work trip?",
         (("Plan one thing just for you, even a walk or a good dinner, and keep the evenings "
           "light so you arrive at meetings fresh."),)),
        ("What's a good routine for the gym as a beginner?",
         (("Three full-body sessions a week: squats, presses, rows and a bit of cardio. Learn "
           "the form with light weights first."),)),
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
