"""Writes `longmem.jsonl`: long multi-session conversations with dates, the per-session
observations a memory step would store from them, and questions about them.

Everything here was written for Engram (templates, names, places; no outside source), so
the data carries the project's license. Generation is deterministic (one seeded RNG):

    python benchmarks/data/make_longmem.py [--seed 7] [--out benchmarks/data/longmem.jsonl]

Ten users, each with 15-30 sessions spread over seven to nine months. A session is a few
user messages (first person) with short assistant replies; each message yields one
observation, a short third-person fact (`memory` rows, with the session's date and a
category). A user's life runs through stories told over several sessions (a pet and its vet
visits, a sister who moves, a job change, trips, races, friends' weddings, ...) and routine
events that repeat with different details at different dates (books, dinners, runs,
coffees, appointments), so most questions have near-duplicates to beat: the same names in
different roles, similar events at other dates, the same thing said twice in other words.

Question kinds (`question` rows, `gold` = the observations that answer it):
- single: one observation answers it, asked in other words;
- multi: it needs two or more (the dog's name and its vet visit, the college friend and
  the wedding gift);
- temporal: when, which first, before/after, "in March", "last month" (relative to
  `asked_at`);
- open: an inference from what was said ("would I enjoy a hiking trip?");
- unanswerable: about something never said (`gold` is empty), often close to something
  that was.
Each question carries `previous`, the user's message before it in the chat: about the
same thing (`previous_related`: true; some questions lean on it, "and where does she live
now?") or about something else.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

OUT = Path(__file__).with_name("longmem.jsonl")
SEED = 7

USERS = [
    ("Maria", "f"),
    ("Daniel", "m"),
    ("Aisha", "f"),
    ("Kenji", "m"),
    ("Sofia", "f"),
    ("Liam", "m"),
    ("Priya", "f"),
    ("Tomas", "m"),
    ("Hannah", "f"),
    ("Omar", "m"),
]
FEMALE = "Mia Ines Lena Clara Nadia Julia Rosa Elena Yuki Chloe Amara Zoe Leila Greta Ana".split()
MALE = "Ben Marco Felix Jonas Ravi Hugo Sam Leo Arjun Diego Noah Emil Karim Theo Luca".split()
NEUTRAL = "Alex Sam Robin Charlie Jordan Kim".split()
CITIES = "Lisbon Porto Berlin Munich Lyon Seattle Denver Toronto Dublin Vienna Leeds Austin".split()

PETS = {
    "dog": ["beagle", "corgi", "border collie", "dachshund", "labrador", "greyhound"],
    "cat": ["tabby", "siamese", "maine coon", "british shorthair", "ragdoll"],
}
PET_NAMES = "Ziggy Biscuit Pepper Mochi Luna Otis Juniper Waffles Pixel Nori".split()
VET = [
    ("an ear infection", "antibiotic drops", "ear problem"),
    ("a limp in the back leg", "a week of rest and a painkiller", "limping"),
    ("the yearly vaccinations", "a booster shot", "annual shots"),
    ("an upset stomach after eating a sock", "a bland diet of rice and chicken", "tummy bug"),
    ("a patch of itchy skin", "a medicated shampoo", "itching"),
    ("a broken claw", "a bandage and a cone", "paw injury"),
]
JOBS = [
    # (job, field hint for open questions, question about a skill it gives)
    ("data analyst", "Could I help my cousin sort out a messy Excel formula?"),
    ("high school chemistry teacher", "Could I tutor a neighbor's kid for a science exam?"),
    ("pastry chef", "Could I bake the cake for my friend's party myself?"),
    ("civil engineer", "Would I understand the structural report on the house I'm viewing?"),
    ("nurse in an emergency department", "Would I know what to do if someone fainted at a party?"),
    ("graphic designer", "Could I make the poster for our street festival myself?"),
    ("software developer", "Could I build a simple website for my aunt's shop?"),
    ("accountant", "Could I do my parents' tax return for them?"),
]
COMPANIES = (
    "Northwind Brightline Helix Quarry&Co Solstice Lumen Fernbank Tidewater Corvid Arclight".split()
)
SIBLING_JOBS = [
    "pediatric nurse",
    "firefighter",
    "architect",
    "marine biologist",
    "bus driver",
    "dentist",
    "journalist",
    "physiotherapist",
]
TRIPS = [
    # (city, country, adjective, sight, food, delay-ish event)
    ("Kyoto", "Japan", "Japanese", "the Fushimi Inari shrine", "okonomiyaki"),
    ("Seoul", "South Korea", "Korean", "Gyeongbokgung palace", "bibimbap"),
    ("Naples", "Italy", "Italian", "the ruins of Pompeii", "fried pizza"),
    ("Marrakesh", "Morocco", "Moroccan", "the Majorelle garden", "lamb tagine"),
    ("Reykjavik", "Iceland", "Icelandic", "the Blue Lagoon", "fermented shark"),
    ("Mexico City", "Mexico", "Mexican", "the pyramids at Teotihuacan", "tacos al pastor"),
    ("Edinburgh", "Scotland", "Scottish", "Arthur's Seat", "haggis"),
    ("Lima", "Peru", "Peruvian", "the Larco museum", "ceviche"),
    ("Hanoi", "Vietnam", "Vietnamese", "Ha Long Bay", "bun cha"),
    ("Athens", "Greece", "Greek", "the Acropolis", "grilled octopus"),
]
NEVER_TRIPS = ["Buenos Aires", "Cape Town", "Bangkok", "Istanbul", "Havana"]
ALLERGIES = [
    ("shellfish", "Can I order the seafood paella at the Spanish place tonight?"),
    ("peanuts", "Is the Thai satay platter a safe choice for me?"),
    ("tree nuts", "Should I try the pistachio baklava at the bakery?"),
    ("lactose", "Would a big cheese fondue evening be a good idea for me?"),
    ("gluten", "Is a pasta-making class a good birthday gift for me?"),
]
INSTRUMENTS = [
    ("saxophone", "Would I enjoy a night at a jazz club?", "Take Five"),
    ("cello", "Would a classical string quartet concert be my kind of thing?", "a Bach suite"),
    ("guitar", "Would I like a flamenco show on my next holiday?", "Wonderwall"),
    ("piano", "Should I go to the Chopin recital downtown?", "a Chopin nocturne"),
]
RACES = ["5K fun run", "10K", "half marathon", "trail race", "charity 5K", "park run"]
BOOKS = [
    ("The Glass Orchard", "mystery"),
    ("Salt and Starlight", "fantasy"),
    ("A Short History of Rivers", "non-fiction"),
    ("The Quiet Engineer", "biography"),
    ("Northbound", "thriller"),
    ("Letters from Lagos", "literary fiction"),
    ("The Clockmaker's Daughter", "historical fiction"),
    ("Deep Field", "science fiction"),
    ("Small Kitchens", "cookbook"),
    ("The Long Table", "memoir"),
    ("Winter Harbor", "romance"),
    ("Signal Lost", "thriller"),
]
GENRES = {
    "mystery": "whodunit",
    "fantasy": "book with dragons and magic",
    "non-fiction": "factual book",
    "biography": "life story",
    "thriller": "page-turner",
    "literary fiction": "prize-winning novel",
    "historical fiction": "period novel",
    "science fiction": "novel set in space",
    "cookbook": "recipe collection",
    "memoir": "autobiography",
    "romance": "love story",
}
OPINIONS = [
    ("loved it", "thought it was brilliant"),
    ("found it slow", "got bored halfway"),
    ("thought the ending was disappointing", "didn't like how it ended"),
    ("couldn't put it down", "read it in two days"),
]
DISHES = [
    "mushroom risotto",
    "lasagna",
    "a Thai green curry",
    "shakshuka",
    "homemade ramen",
    "a lemon tart",
    "beef stew",
    "stuffed peppers",
    "a paella",
    "falafel wraps",
    "a chocolate cake",
    "dumplings",
]
MOVIES = [
    ("a documentary about octopuses", "documentary"),
    ("an old Hitchcock film", "classic thriller"),
    ("the new Pixar movie", "animated film"),
    ("a Korean horror film", "horror movie"),
    ("a three-hour war epic", "war film"),
    ("a romantic comedy set in Paris", "rom-com"),
    ("a space survival film", "sci-fi movie"),
    ("a biopic about a chess player", "biopic"),
]
CAFES = ["the corner bakery", "a ramen bar", "the museum cafe", "a new brunch spot", "the pub"]
PURCHASES = [
    ("a standing desk", "desk"),
    ("noise-cancelling headphones", "headphones"),
    ("a secondhand road bike", "bike"),
    ("an air fryer", "kitchen gadget"),
    ("a robot vacuum", "vacuum"),
    ("a new winter coat", "coat"),
    ("an e-reader", "e-reader"),
    ("a coffee grinder", "grinder"),
]
WEEKEND = [
    "went to a farmers market",
    "spent the weekend cleaning out the garage",
    "went to a pottery workshop",
    "helped a friend move house",
    "went to an escape room",
    "spent Sunday doing a jigsaw puzzle",
    "visited an art exhibition about surrealism",
    "went ice skating",
    "tried indoor bouldering",
    "went to a board game cafe",
]
MOODS = [
    ("felt exhausted after a long week", "I'm wiped out, what a week."),
    ("was stressed about a deadline", "Work deadlines are stressing me out."),
    ("was in a great mood after a sunny weekend", "Such a sunny weekend, I feel great."),
    ("complained that it rained all week", "It has rained all week here."),
    ("had trouble sleeping because of noisy neighbors", "The neighbors kept me up again."),
    ("felt a cold coming on", "I think I'm catching a cold."),
]
NAMED = ["pet", "species", "sister", "brother", "nephew", "boss", "coworker", "old", "new"]
NAMED += ["city1", "city2", "city3", "instrument", "teacher", "college", "other"]
CHATTER: list[tuple[str, list[str]]] = [
    (
        "pets",
        [
            "{pet} chewed up a pair of {n}'s shoes.",
            "{n} bought {pet} a new bed and a squeaky toy.",
            "{pet} loves sleeping in the sun by the window.",
            "{n} takes {pet} to the park every morning before work.",
            "{pet} barked at the postman all week.",
            "{n} is trying to teach {pet} to stop begging at the table.",
            "{n} switched {pet} to a grain-free food.",
            "{pet} got on well with a friend's {species} at a playdate.",
            "{n} booked {pet} in for a nail trim next week.",
            "{n} worries that {pet} is putting on weight.",
        ],
    ),
    (
        "family",
        [
            "{sister} came to stay with {n} for the weekend.",
            "{n} and {sister} argued about plans for the holidays.",
            "{sister} started dating someone she met at a climbing gym.",
            "{n} helped {sister} with her CV for a job application.",
            "{sister} sent {n} a box of pastries from her local bakery.",
            "{sister} is thinking about buying a car.",
            "{n} video-called {sister} on her birthday.",
        ],
    ),
    (
        "family",
        [
            "{brother} is renovating his kitchen.",
            "{n} went fishing with {brother}.",
            "{nephew} started at a new school.",
            "{n} babysat {nephew} on Saturday.",
            "{brother} lent {n} his camping gear.",
        ],
    ),
    (
        "work",
        [
            "{n} had a one-to-one with {boss} about priorities.",
            "{boss} asked {n} to mentor a new intern.",
            "{n}'s team at {new} moved to a new floor.",
            "{n} went to a team lunch with people from {new}.",
            "{n} still keeps in touch with an old colleague from {old}.",
            "{coworker} covered for {n} during a sick day.",
            "{n} took a public speaking course paid for by {new}.",
        ],
    ),
    (
        "travel",
        [
            "{n} stayed in a small guesthouse in {city1}.",
            "It was much colder in {city2} than {n} expected.",
            "{n} bought a souvenir for {his} mother in {city3}.",
            "{n} took a day trip out of {city1} by train.",
            "{n} got lost in the old town of {city2}.",
            "{n} found {city3} more expensive than expected.",
        ],
    ),
    (
        "friends",
        [
            "{college} asked {n} to give a speech at the wedding.",
            "{n} helped {college} choose the wedding music.",
            "{other} is exhausted from sleepless nights with the baby.",
            "{n} visited {other} and brought dinner.",
        ],
    ),
    (
        "hobbies",
        [
            "{n} practiced the {instrument} for an hour every evening this week.",
            "{teacher} told {n} to work on {his} timing.",
            "{n} bought a new case for the {instrument}.",
            "{n} missed a lesson with {teacher} because of work.",
            "{n} did a long training run along the river.",
            "{n} bought new running shoes.",
            "{n} joined a running club that meets on Tuesdays.",
        ],
    ),
    (
        "health",
        [
            "{n} had a flu jab at the pharmacy.",
            "{n}'s back was sore after gardening.",
            "{n} booked a GP appointment about headaches.",
            "{n}'s doctor said {his} blood pressure is fine.",
            "{n} started taking vitamin D.",
            "{n} had an eye test and needs new glasses.",
        ],
    ),
    (
        "home",
        [
            "{n}'s upstairs neighbor plays loud music late at night.",
            "{n} bought houseplants for the balcony.",
            "{n} put up shelves in the hallway.",
            "The boiler in {n}'s flat broke down for two days.",
            "{n} is thinking about moving somewhere bigger.",
        ],
    ),
]
MOOD_REASONS = [
    "because of a project at work",
    "after a family dinner",
    "before a big exam",
    "with the clocks changing",
    "after a bad night's sleep",
    "after a long drive",
    "for no clear reason",
    "after the weekend away",
]
WORKOUTS = ["yoga", "spin", "pilates", "boxing", "HIIT", "aqua aerobics"]
WORKOUT_NOTES = [
    "could barely walk the next day",
    "felt stronger than last time",
    "left early with a headache",
    "was the only beginner there",
    "liked the new instructor",
]
RELATIVES = ["dad", "grandmother", "aunt", "cousin", "uncle"]
CALL_TOPICS = [
    "a family reunion",
    "selling the old house",
    "a health scare",
    "a wedding next summer",
    "money worries",
    "a new puppy",
    "a holiday in Spain",
]
WORKDAYS = [
    "stayed late to finish a report",
    "had a long meeting",
    "gave a presentation to a client",
    "worked from home all week",
    "was asked to lead a small project",
    "argued with a colleague",
]
WORK_TOPICS = [
    "the budget",
    "the new hire",
    "a delayed launch",
    "the quarterly numbers",
    "office seating",
    "a customer complaint",
]
OUTDOOR = [
    (
        "spent a weekend hiking in the mountains and loved being above the tree line",
        "Would I enjoy a week-long walking holiday in the Alps?",
    ),
    (
        "goes wild swimming in the lake every Saturday",
        "Would an open-water swimming event be something I'd sign up for?",
    ),
    (
        "said camping under the stars was the best night of the summer",
        "Is a festival where you sleep in a tent my kind of thing?",
    ),
]
DISLIKES = [
    ("gets seasick even on short ferry rides", "Is a sailing trip around the islands a good plan?"),
    ("is afraid of heights", "Should I book the glass-floor skywalk tour?"),
    ("hates crowded places", "Should I go to the New Year's Eve fireworks downtown?"),
    ("finds spicy food unbearable", "Would I like the Sichuan hot-pot restaurant?"),
]
UNRELATED = [
    "Can you help me write a polite email to my landlord?",
    "What's a good stretch for lower back pain?",
    "Thanks, that recipe worked out really well!",
    "How do I convert cups to grams for flour?",
    "Remind me to call the bank tomorrow.",
    "What's the capital of Australia again?",
    "Can you summarize this article for me later?",
    "I need a name for my fantasy football team.",
    "Ok, thanks!",
    "How long should I boil an egg for a runny yolk?",
    "Give me a fun fact to start my presentation.",
    "What's the weather usually like in May?",
]
REPLIES = [
    "Thanks for telling me!",
    "That sounds lovely.",
    "Oh no, I hope it gets better.",
    "Noted, I'll remember that.",
    "That's great news!",
    "Got it.",
    "How exciting!",
    "Sorry to hear that.",
]
MONTHS = "January February March April May June July August September October November December"
MONTH = MONTHS.split()


@dataclass
class Memory:
    id: str
    session: int
    category: str
    text: str
    said: str


@dataclass
class Candidate:
    kind: str
    text: str
    gold: list[str]
    previous: str | None = None  # a related previous message
    needs_previous: bool = False  # the question leans on it ("and where does she live?")


@dataclass
class Life:
    index: int
    name: str
    sex: str
    rng: random.Random
    dates: list[date] = field(default_factory=list)
    memories: list[Memory] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    used: set[str] = field(default_factory=set)  # names given to people and pets
    known: dict[str, str] = field(default_factory=dict)  # who and what the stories named

    @property
    def user(self) -> str:
        return f"u{self.index:02d}"

    @property
    def asked(self) -> date:
        return self.dates[-1] + timedelta(days=3)

    def p(self, text: str, **slots: str) -> str:
        he, his, him = ("she", "her", "her") if self.sex == "f" else ("he", "his", "him")
        return text.format(n=self.name, he=he, his=his, him=him, **slots)

    def session(self, lo: float, hi: float) -> int:
        last = len(self.dates) - 1
        return self.rng.randint(round(lo * last), round(hi * last))

    def person(self, sex: str) -> str:
        pool = FEMALE if sex == "f" else MALE
        name = self.rng.choice([n for n in pool if n not in self.used])
        self.used.add(name)
        return name

    def add(self, session: int, category: str, text: str, said: str) -> str:
        memory_id = f"{self.user}-m{len(self.memories) + 1:03d}"
        self.memories.append(Memory(memory_id, session, category, self.p(text), self.p(said)))
        return memory_id

    def ask(self, kind: str, text: str, gold: list[str], previous: str | None = None) -> None:
        self.candidates.append(Candidate(kind, self.p(text), gold, previous and self.p(previous)))

    def lean(self, kind: str, text: str, gold: list[str], previous: str) -> None:
        self.candidates.append(Candidate(kind, self.p(text), gold, self.p(previous), True))

    def month(self, session: int) -> str:
        return MONTH[self.dates[session].month - 1]

    def when(self, session: int) -> str:
        """How a user would name the session's month when asking at `asked`."""
        day = self.dates[session]
        last = (self.asked.replace(day=1) - timedelta(days=1)).month
        if day.month == last and day.year <= self.asked.year:
            return "last month"
        if day.month == self.asked.month and day.year == self.asked.year:
            return "earlier this month"
        return f"in {MONTH[day.month - 1]}"


# -- stories: what a user tells over several sessions ------------------------------------


def pet(life: Life) -> None:
    rng = life.rng
    species = rng.choice(sorted(PETS))
    breed = rng.choice(PETS[species])
    name = rng.choice(PET_NAMES)
    life.used.add(name)
    life.known.update(pet=name, species=species)
    it = rng.choice(["he", "she"])
    them = "him" if it == "he" else "her"
    adopt = life.add(
        life.session(0.0, 0.15),
        "pets",
        f"{{n}} adopted a {breed} named {name}.",
        f"We finally adopted a {breed}! {it.capitalize()}'s called {name}.",
    )
    life.ask(
        "single",
        f"What did I name my {species} again?",
        [adopt],
        f"I'm filling in a form at the {species} groomer.",
    )
    life.ask("open", "Do I need to sort out a sitter before going away for a week?", [adopt])
    sitter = life.person(rng.choice("mf"))
    care = life.add(
        life.session(0.2, 0.5),
        "pets",
        f"{{n}} hired a neighbor called {sitter} to walk and feed {name} during work trips.",
        f"Our neighbor {sitter} is going to look after {name} when I travel for work.",
    )
    life.ask(
        "single",
        f"Who takes care of my {species} when I'm traveling?",
        [care],
        "I have a work trip to plan next week.",
    )
    life.ask("multi", f"Who looks after my {breed} when I'm away?", [adopt, care])
    visits = rng.sample(VET, 4)
    sessions = sorted(rng.sample(range(2, len(life.dates)), 4))
    ids = []
    for (issue, treatment, _), s in zip(visits, sessions, strict=True):
        ids.append(
            life.add(
                s,
                "pets",
                f"{name} went to the vet for {issue} and was given {treatment}.",
                f"Took {name} to the vet today, {issue}. They gave {them} {treatment}.",
            )
        )
    first = 1
    issue, treatment, short = visits[first]
    life.ask(
        "multi",
        f"What did the vet prescribe for my {species}'s {short}?",
        [adopt, ids[first]],
        f"My {species} has been acting a bit off again.",
    )
    life.ask(
        "temporal",
        f"Why did {name} have to see the vet {life.when(sessions[2])}?",
        [ids[2]],
        f"{name} is due for a checkup soon.",
    )
    life.lean(
        "temporal",
        "What was the last thing the vet treated them for?",
        [ids[3]],
        f"I'm worried about {name} again.",
    )
    life.ask("unanswerable", f"What did the groomer say about {name}'s coat?", [])
    other = "cat" if species == "dog" else "dog"
    life.ask("unanswerable", f"What's my {other} called?", [])


def family(life: Life) -> None:
    rng = life.rng
    sister, brother = life.person("f"), life.person("m")
    job = rng.choice(SIBLING_JOBS)
    first, second = rng.sample(CITIES, 2)
    works = life.add(
        life.session(0.0, 0.3),
        "family",
        f"{{n}}'s sister {sister} works as a {job}.",
        f"My sister {sister} is a {job}, she loves it.",
    )
    lives = life.add(
        life.session(0.0, 0.3),
        "family",
        f"{sister} has a small flat in {first} near the river.",
        f"{sister} has this tiny flat in {first} by the river.",
    )
    move = life.add(
        life.session(0.55, 0.8),
        "family",
        f"{sister} relocated to {second} after getting a better offer.",
        f"Big news: {sister} is moving to {second}, she got a better offer there.",
    )
    life.ask(
        "single",
        "What does my sister do for a living?",
        [works],
        "My colleague asked about my family.",
    )
    life.ask("multi", "Which city is my sister based in these days?", [works, move])
    life.lean("multi", "Where does she live now?", [works, move], "My sister called me today.")
    life.ask(
        "temporal",
        f"Where was {sister} living before her move?",
        [lives, move],
        "I found an old postcard from my sister.",
    )
    nephew = life.person("m")
    age = rng.randint(3, 9)
    life.known.update(sister=sister, brother=brother, nephew=nephew)
    kid = life.add(
        life.session(0.1, 0.6),
        "family",
        f"{{n}}'s brother {brother} has a {age}-year-old son named {nephew}.",
        f"My brother {brother}'s boy {nephew} just turned {age}.",
    )
    life.ask(
        "single", "How old is my nephew?", [kid], "I want to buy a birthday present for a kid."
    )
    life.lean(
        "single",
        "How old is he now?",
        [kid],
        f"My brother's son {nephew} wants a bike.",
    )
    gift = rng.choice(["a pottery class", "a silk scarf", "a framed family photo", "a tea set"])
    mom = life.add(
        life.session(0.3, 0.7),
        "family",
        "{n}'s mother is recovering from hip surgery and can't walk far yet.",
        "Mum had her hip operation, she can't walk far for a while.",
    )
    bday = life.add(
        life.session(0.1, 0.9),
        "family",
        f"{{n}} gave {{his}} mother {gift} for her birthday.",
        f"I got Mum {gift} for her birthday.",
    )
    life.ask(
        "open",
        "Would my mom manage a long hike with us next weekend?",
        [mom],
        "We are planning a family weekend in the hills.",
    )
    life.ask("single", "What present did I give my mum on her birthday?", [bday])
    life.ask("unanswerable", f"What's the name of {sister}'s husband?", [])
    life.ask("unanswerable", "Where does my brother work?", [])


def work(life: Life) -> None:
    rng = life.rng
    job, skill = rng.choice(JOBS)
    old, new = rng.sample(COMPANIES, 2)
    boss = life.person(rng.choice("mf"))
    coworker = life.person(rng.choice("mf"))
    life.known.update(boss=boss, coworker=coworker, old=old, new=new)
    start = life.session(0.0, 0.15)
    a = life.add(start, "work", f"{{n}} works as a {job} at {old}.", f"I'm a {job} at {old}.")
    quit_at = life.session(0.35, 0.5)
    b = life.add(
        quit_at,
        "work",
        f"{{n}} handed in {{his}} notice at {old}.",
        f"I finally handed in my notice at {old}!",
    )
    c = life.add(
        min(quit_at + 1, len(life.dates) - 1),
        "work",
        f"{{n}} started a new role as a senior {job} at {new}.",
        f"First day at {new} today, senior {job} now.",
    )
    d = life.add(
        life.session(0.55, 0.7),
        "work",
        f"{{n}}'s manager at {new} is {boss}.",
        f"My new boss at {new} is called {boss}.",
    )
    project = rng.choice(["the pricing dashboard", "the spring campaign", "the office move"])
    e = life.add(
        life.session(0.7, 1.0),
        "work",
        f"{boss} praised {{n}}'s work on {project} in {{his}} performance review.",
        f"Review went well, {boss} liked what I did on {project}.",
    )
    life.add(
        life.session(0.6, 1.0),
        "work",
        f"{{n}}'s coworker {coworker} is training for a triathlon.",
        f"{coworker} from work is doing a triathlon, madness.",
    )
    life.ask(
        "temporal",
        "Which company was I at before my current job?",
        [a, b, c],
        "A recruiter called me today.",
    )
    life.ask("single", "Who's my boss now?", [d], "I need to ask for a day off.")
    life.lean("single", "What's my boss's name again?", [d], f"Things at {new} are busy.")
    life.ask("multi", "What did my manager say at my review?", [d, e], "Pay rise season is coming.")
    life.ask("open", skill, [a, c])
    life.ask(
        "temporal",
        "When did I start at my new company?",
        [c],
        "I'm updating my CV.",
    )
    life.ask("unanswerable", f"How much do I earn at {new}?", [])
    life.ask("unanswerable", f"What did my manager at {old} think of my work?", [])


def trips(life: Life) -> None:
    rng = life.rng
    chosen = rng.sample(TRIPS, 3)
    spots = sorted(rng.sample(range(1, len(life.dates) - 1), 3))
    ids = []
    for (city, country, adj, sight, food), s in zip(chosen, spots, strict=True):
        plan = life.add(
            s - 1,
            "travel",
            f"{{n}} booked flights to {city} for the following weeks.",
            f"Just booked flights to {city}!",
        )
        saw = life.add(
            s,
            "travel",
            f"{{n}} visited {sight} in {city}.",
            f"Back from {city}. We saw {sight}, amazing.",
        )
        ate = life.add(
            s,
            "travel",
            f"{{n}} tried {food} in {city} and wants to learn to cook it.",
            f"The {food} in {city} was so good, I want to make it at home.",
        )
        ids.append((plan, saw, ate, city, country, adj, s))
        life.known[f"city{len(ids)}"] = city
    plan, saw, ate, city, country, adj, s = ids[0]
    life.ask("single", f"What was that dish I loved in {country}?", [ate])
    life.ask("temporal", f"Where did I go on holiday {life.when(s)}?", [plan, saw, ate])
    x, y = ids[1], ids[2]
    life.ask(
        "temporal",
        f"Which trip came first, {y[4]} or {x[4]}?",
        [x[1], x[2], y[1], y[2], x[0], y[0]],
    )
    delayed = rng.randint(2, 6)
    delay = life.add(
        y[6],
        "travel",
        f"{{n}}'s flight home from {y[3]} was delayed by {delayed} hours.",
        f"Flight back from {y[3]} was {delayed} hours late, ugh.",
    )
    life.ask("multi", "What did I see on the trip where my flight home was delayed?", [delay, y[1]])
    life.ask(
        "single",
        f"What landmark did I visit during my {x[5]} holiday?",
        [x[1]],
        "I'm making a photo album of this year.",
    )
    life.lean(
        "single",
        "What was the food like there?",
        [x[2]],
        f"I keep thinking about my trip to {x[4]}.",
    )
    never = rng.choice(NEVER_TRIPS)
    life.ask("unanswerable", f"What did I think of {never} when I went?", [])
    quirk, question = rng.choice(DISLIKES)
    q = life.add(life.session(0.0, 1.0), "preferences", f"{{n}} {quirk}.", f"Honestly, I {quirk}.")
    life.ask("open", question, [q])


def health(life: Life) -> None:
    rng = life.rng
    allergen, question = rng.choice(ALLERGIES)
    a = life.add(
        life.session(0.0, 0.5),
        "health",
        f"{{n}} is allergic to {allergen}.",
        f"Oh, I can't have {allergen}, I'm allergic.",
    )
    life.ask("open", question, [a])
    visits = [
        ("the dentist found a small cavity", "dentist said I've got a small cavity"),
        ("{n} got the cavity filled at the dentist", "got my filling done today"),
        ("{n} had a teeth cleaning and the hygienist said to floss more", "hygienist nagged me"),
    ]
    spots = sorted(rng.sample(range(len(life.dates)), 3))
    ids = [
        life.add(s, "health", f"At a dental checkup {text}." if i == 0 else f"{text}.", said)
        for i, ((text, said), s) in enumerate(zip(visits, spots, strict=True))
    ]
    life.ask(
        "single",
        "What did my dentist discover at the checkup?",
        [ids[0]],
        "My tooth hurts when I drink something cold.",
    )
    life.ask("temporal", "When did I have my tooth fixed?", [ids[1]])
    sport = rng.choice(["five-a-side football", "basketball", "tennis", "badminton"])
    inj = life.add(
        life.session(0.2, 0.8),
        "health",
        f"{{n}} sprained {{his}} ankle playing {sport}.",
        f"Twisted my ankle at {sport}, it's swollen.",
    )
    physio = life.add(
        life.session(0.8, 1.0),
        "health",
        "{n} is doing physiotherapy exercises twice a day.",
        "Physio gave me exercises to do twice a day.",
    )
    life.lean(
        "multi",
        "Why do I have to do them again?",
        [physio, inj],
        "I forgot my physio exercises today.",
    )
    life.ask("multi", "Why am I doing physio exercises?", [physio, inj])
    life.ask(
        "temporal",
        f"Which month did I hurt myself playing {sport}?",
        [inj],
        "My ankle still aches.",
    )
    life.ask("unanswerable", "What's my blood type?", [])
    life.ask("unanswerable", "When is my next eye exam?", [])


def hobbies(life: Life) -> None:
    rng = life.rng
    instrument, question, piece = rng.choice(INSTRUMENTS)
    teacher = life.person(rng.choice("mf"))
    life.known.update(instrument=instrument, teacher=teacher)
    a = life.add(
        life.session(0.0, 0.3),
        "hobbies",
        f"{{n}} started {instrument} lessons with a teacher called {teacher}.",
        f"Started {instrument} lessons! My teacher is {teacher}.",
    )
    b = life.add(
        life.session(0.5, 1.0),
        "hobbies",
        f"{{n}} can now play {piece} on the {instrument}.",
        f"I can finally play {piece}!",
    )
    life.ask("single", "Who's my music teacher?", [a], f"I need to cancel my {instrument} lesson.")
    life.ask("open", question, [a, b])
    life.ask("multi", "What piece can I play now on the instrument I'm learning?", [a, b])
    outdoor, q = rng.choice(OUTDOOR)
    c = life.add(life.session(0.0, 1.0), "hobbies", f"{{n}} {outdoor}.", f"I {outdoor}.")
    life.ask("open", q, [c])
    races = rng.sample(RACES, 4)
    spots = sorted(rng.sample(range(len(life.dates)), 4))
    ids = []
    for race, s in zip(races, spots, strict=True):
        t = f"{rng.randint(20, 120)} minutes"
        ids.append(
            life.add(s, "sport", f"{{n}} finished the {race} in {t}.", f"Did the {race}: {t}!")
        )
    life.ask("temporal", f"What was my time in the race I ran {life.when(spots[1])}?", [ids[1]])
    life.ask("temporal", "What was the first race I ran this year?", [ids[0]])
    life.ask(
        "single",
        f"How long did the {races[2]} take me?",
        [ids[2]],
        "I want to sign up for another race.",
    )
    life.ask("unanswerable", "What position do I play on my volleyball team?", [])
    life.ask("unanswerable", "Which choir did I join?", [])


def friends(life: Life) -> None:
    rng = life.rng
    college = life.person(rng.choice("mf"))
    other = life.person("f")
    life.known.update(college=college, other=other)
    gift = rng.choice(["a hand-made quilt", "a set of copper pans", "a weekend in a cabin"])
    place = rng.choice(["a vineyard", "a lighthouse", "a barn in the countryside"])
    a = life.add(
        life.session(0.0, 0.3),
        "friends",
        f"{{n}}'s friend {college} from university got engaged.",
        f"{college}, my friend from uni, got engaged!",
    )
    b = life.add(
        life.session(0.4, 0.6),
        "friends",
        f"{{n}} bought {gift} as a wedding present for {college}.",
        f"Got {college} {gift} for the wedding.",
    )
    c = life.add(
        life.session(0.6, 0.9),
        "friends",
        f"{{n}} went to {college}'s wedding at {place}.",
        f"{college}'s wedding at {place} was beautiful.",
    )
    life.ask("multi", "What did I give my college friend as a wedding gift?", [a, b])
    life.ask(
        "multi",
        "Where did my uni friend get married?",
        [a, c],
        "I'm looking for a venue idea for a party.",
    )
    life.lean(
        "single", "Where did they get married?", [c], f"{college} sent me the wedding photos."
    )
    baby = life.person("f")
    d = life.add(
        life.session(0.2, 0.9),
        "friends",
        f"{{n}}'s friend {other} had a baby girl called {baby}.",
        f"{other} had her baby! A girl, {baby}.",
    )
    life.ask(
        "single",
        "What did my friend call her newborn?",
        [d],
        "I'm writing a card for a newborn.",
    )
    band = rng.choice(["a Portuguese fado singer", "an old punk band", "a jazz trio"])
    shared = rng.choice(NEUTRAL)
    e = life.add(
        life.session(0.1, 0.9),
        "friends",
        f"{{n}} and {{his}} school friend {shared} went to see {band} live.",
        f"{shared} and I saw {band} live last night.",
    )
    life.add(
        life.session(0.1, 0.9),
        "work",
        f"{{n}}'s colleague {shared} is moving to the Lisbon office.",
        f"{shared} from the office is moving to Lisbon.",
    )
    life.ask("single", f"Which concert did I go to with {shared}?", [e])
    life.ask("unanswerable", f"When is {college}'s baby due?", [])


def home(life: Life) -> None:
    rng = life.rng
    color = rng.choice(["sage green", "terracotta", "navy blue", "pale yellow"])
    a = life.add(
        life.session(0.0, 0.2),
        "home",
        "{n} lives in a one-bedroom flat on the fourth floor with no lift.",
        "My flat's a one-bed on the fourth floor, and there's no lift.",
    )
    b = life.add(
        life.session(0.2, 0.8),
        "home",
        f"{{n}} repainted the living room {color}.",
        f"Painted the living room {color} this weekend.",
    )
    c = life.add(
        life.session(0.2, 0.9),
        "home",
        "{n}'s landlord finally fixed the leaking kitchen tap.",
        "The landlord finally sorted the dripping tap in the kitchen.",
    )
    life.ask(
        "open",
        "Could I host a party for forty people at my place?",
        [a],
        "My birthday is coming up.",
    )
    life.ask("open", "Would buying a piano for my flat be practical to get delivered?", [a])
    life.ask(
        "single",
        "What colour are the walls in my lounge now?",
        [b],
        "I want new curtains.",
    )
    life.ask("single", "Did the landlord ever repair the sink?", [c], "The kitchen is a mess.")
    life.ask("unanswerable", "How much rent do I pay?", [])
    life.ask("unanswerable", "What's the name of my landlord?", [])


# -- routines: similar events that repeat with other details at other dates -------------


def routines(life: Life, per_session: Callable[[], int]) -> None:
    rng = life.rng
    books = rng.sample(BOOKS, 6)
    dishes = rng.sample(DISHES, 8)
    movies = rng.sample(MOVIES, 5)
    buys = rng.sample(PURCHASES, 5)
    weekends = rng.sample(WEEKEND, 8)
    pals = [life.person(rng.choice("mf")) for _ in range(3)]
    made: dict[str, list[tuple[int, str, tuple[str, ...]]]] = {}

    def book(s: int) -> tuple[str, str, tuple[str, ...]]:
        title, genre = books.pop()
        opinion, said = rng.choice(OPINIONS)
        text = f"{{n}} finished reading {title}, a {genre}, and {opinion}."
        return text, f"Finished {title}. I {said}.", (title, genre)

    def dish(s: int) -> tuple[str, str, tuple[str, ...]]:
        food = dishes.pop()
        guest = rng.choice(pals)
        text = f"{{n}} cooked {food} for dinner with {guest}."
        return text, f"Made {food} for {guest} tonight.", (food, guest)

    def movie(s: int) -> tuple[str, str, tuple[str, ...]]:
        title, genre = movies.pop()
        verdict = rng.choice(["enjoyed it", "fell asleep halfway", "found it too long"])
        return f"{{n}} watched {title} and {verdict}.", f"Watched {title}.", (title, genre)

    def buy(s: int) -> tuple[str, str, tuple[str, ...]]:
        item, kind = buys.pop()
        price = rng.choice(["80", "120", "250", "400", "35"])
        return (
            f"{{n}} bought {item} for {price} euros.",
            f"Treated myself to {item}, {price} euros.",
            (item, kind),
        )

    def weekend(s: int) -> tuple[str, str, tuple[str, ...]]:
        what = weekends.pop()
        return f"{{n}} {what}.", f"I {what}.", (what,)

    def coffee(s: int) -> tuple[str, str, tuple[str, ...]]:
        pal, cafe = rng.choice(pals), rng.choice(CAFES)
        topic = rng.choice(["job hunting", "a breakup", "a house renovation", "travel plans"])
        return (
            f"{{n}} met {pal} at {cafe}; they talked about {pal}'s {topic}.",
            f"Coffee with {pal} at {cafe}, we talked about {topic}.",
            (pal, topic),
        )

    def mood(s: int) -> tuple[str, str, tuple[str, ...]]:
        feeling, said = rng.choice(MOODS)
        why = rng.choice(MOOD_REASONS)
        return f"{{n}} {feeling} {why}.", f"{said} {why.capitalize()}.", (feeling,)

    def gym(s: int) -> tuple[str, str, tuple[str, ...]]:
        workout, how = rng.choice(WORKOUTS), rng.choice(WORKOUT_NOTES)
        return (
            f"{{n}} went to a {workout} class and {how}.",
            f"{workout} class: {how}.",
            (
                workout,
                how,
            ),
        )

    def call(s: int) -> tuple[str, str, tuple[str, ...]]:
        relative, topic = rng.choice(RELATIVES), rng.choice(CALL_TOPICS)
        return (
            f"{{n}} had a long phone call with {{his}} {relative} about {topic}.",
            f"Spent an hour on the phone with my {relative} about {topic}.",
            (relative, topic),
        )

    def workday(s: int) -> tuple[str, str, tuple[str, ...]]:
        what, about = rng.choice(WORKDAYS), rng.choice(WORK_TOPICS)
        return f"{{n}} {what} about {about}.", f"I {what} about {about}.", (what, about)

    makers: dict[str, Callable[[int], tuple[str, str, tuple[str, ...]]]] = {
        "book": book,
        "dish": dish,
        "movie": movie,
        "buy": buy,
        "weekend": weekend,
        "coffee": coffee,
        "mood": mood,
        "workday": workday,
        "gym": gym,
        "call": call,
    }
    limits = {"book": 6, "dish": 8, "movie": 5, "buy": 5, "weekend": 8}
    categories = {
        "book": "books",
        "dish": "food",
        "movie": "media",
        "buy": "shopping",
        "weekend": "leisure",
        "coffee": "friends",
        "mood": "wellbeing",
        "workday": "work",
        "gym": "sport",
        "call": "family",
    }
    seen = {m.text for m in life.memories}
    counts = {s: sum(1 for m in life.memories if m.session == s) for s in range(len(life.dates))}
    for s in range(len(life.dates)):
        want = per_session()
        tries = 0
        while counts[s] < want and tries < 200:
            tries += 1
            open_kinds = [k for k in makers if len(made.get(k, [])) < limits.get(k, 99)]
            kind = rng.choice(open_kinds)
            text, said, details = makers[kind](s)
            if life.p(text) in seen:
                continue  # the same words twice would be one memory
            seen.add(life.p(text))
            memory_id = life.add(s, categories[kind], text, said)
            made.setdefault(kind, []).append((s, memory_id, details))
            counts[s] += 1

    def some(kind: str) -> list[tuple[int, str, tuple[str, ...]]]:
        return made.get(kind, [])

    for _, memory_id, details in some("book")[:3]:
        life.ask(
            "single",
            f"What did I think of {details[0]}?",
            [memory_id],
            "A friend wants a book tip.",
        )
        life.ask("single", f"Did I enjoy that {GENRES[details[1]]} I read?", [memory_id])
    for s, memory_id, details in some("book")[3:5]:
        life.ask("temporal", f"Which {details[1]} book did I read {life.when(s)}?", [memory_id])
    for _, memory_id, details in some("dish")[:3]:
        life.ask("single", f"What did I make when {details[1]} came over for dinner?", [memory_id])
    for s, memory_id, _ in some("dish")[3:5]:
        life.ask(
            "temporal", f"What did I cook {life.when(s)}?", [memory_id], "I need dinner ideas."
        )
    for _, memory_id, details in some("movie")[:2]:
        life.ask("single", f"Did I like that {details[1]} I watched?", [memory_id])
    for _, memory_id, details in some("buy")[:3]:
        life.ask(
            "single",
            f"How much did I pay for my {details[1]}?",
            [memory_id],
            "I'm doing my budget.",
        )
    for _, memory_id, details in some("buy")[3:4]:
        life.ask("temporal", f"When did I buy the {details[1]}?", [memory_id])
    for _, memory_id, details in some("coffee")[:2]:
        life.ask(
            "single",
            f"What was {details[0]} going through last time we caught up?",
            [memory_id],
            f"I'm seeing {details[0]} tomorrow.",
        )
    for s, memory_id, _ in some("weekend")[:2]:
        life.ask("temporal", f"What did I get up to at the weekend {life.when(s)}?", [memory_id])
    for s, memory_id, details in some("gym")[:2]:
        life.ask("temporal", f"How did my {details[0]} session go {life.when(s)}?", [memory_id])
    for _, memory_id, details in some("call")[:2]:
        life.ask("single", f"What did my {details[0]} and I discuss on the phone?", [memory_id])
    books_read = [m for _, m, _ in some("book")]
    life.ask("multi", "How many books have I finished recently, and which ones?", books_read)
    life.ask("unanswerable", "What did I think of the opera I went to?", [])
    life.ask("unanswerable", "Which podcast did I start listening to?", [])


def chatter(life: Life) -> None:
    """Everyday mentions of the stories' people, pets and places: the memories a question
    about them has to be told apart from."""
    rng = life.rng
    for category, templates in CHATTER:
        needed = {n for t in templates for n in NAMED if "{" + n + "}" in t}
        if not needed <= life.known.keys():
            continue
        for template in rng.sample(templates, round(len(templates) * 0.7)):
            text = template.format(**life.known, n="{n}", his="{his}", he="{he}", him="{him}")
            life.add(rng.randrange(len(life.dates)), category, text, first_person(text))


def first_person(text: str) -> str:
    """What the user said, roughly: "{n} takes Ziggy out" -> "I take Ziggy out"."""
    said = text.replace("{n}'s", "my").replace("{his}", "my").replace("{n}", "I")
    for verb, mine in (("is", "am"), ("takes", "take"), ("worries", "worry"), ("keeps", "keep")):
        said = said.replace(f"I {verb} ", f"I {mine} ").replace(
            f"I still {verb} ", f"I still {mine} "
        )
    return said[0].upper() + said[1:]


STORIES = [pet, family, work, trips, health, hobbies, friends, home, chatter]
QUOTA = {"single": 15, "multi": 8, "temporal": 11, "open": 7, "unanswerable": 9}


def make_dates(rng: random.Random) -> list[date]:
    start = date(2025, 6, 1) + timedelta(days=rng.randint(0, 75))
    sessions = rng.randint(15, 30)
    span = rng.randint(210, 270)
    days = sorted(rng.sample(range(1, span), sessions - 1))
    return [start] + [start + timedelta(days=d) for d in days]


def build(index: int, name: str, sex: str, seed: int) -> Life:
    rng = random.Random(seed * 1000 + index)
    life = Life(index, name, sex, rng, used={name})
    life.dates = make_dates(rng)
    for story in STORIES:
        story(life)
    routines(life, lambda: rng.randint(8, 12))
    return life


def rows(life: Life) -> list[dict[str, object]]:
    rng = life.rng
    out: list[dict[str, object]] = []
    for s, day in enumerate(life.dates):
        turns = []
        for memory in (m for m in life.memories if m.session == s):
            turns.append({"role": "user", "text": memory.said})
            turns.append({"role": "assistant", "text": rng.choice(REPLIES)})
        out.append(
            {
                "kind": "session",
                "user": life.user,
                "session": s,
                "date": day.isoformat(),
                "turns": turns,
            }
        )
    for memory in life.memories:
        out.append(
            {
                "kind": "memory",
                "user": life.user,
                "id": memory.id,
                "session": memory.session,
                "date": life.dates[memory.session].isoformat(),
                "category": memory.category,
                "text": memory.text,
            }
        )
    merged: dict[str, Candidate] = {}
    for candidate in life.candidates:  # "what did I cook in August?" may have two answers
        if candidate.text in merged:
            known = merged[candidate.text].gold
            known += [g for g in candidate.gold if g not in known]
        else:
            merged[candidate.text] = candidate
    chosen: list[Candidate] = []
    for kind, quota in QUOTA.items():
        pool = [c for c in merged.values() if c.kind == kind]
        chosen += rng.sample(pool, min(quota, len(pool)))
    for number, question in enumerate(chosen, 1):
        related = question.needs_previous or (question.previous is not None and rng.random() < 0.5)
        previous = question.previous if related and question.previous else rng.choice(UNRELATED)
        out.append(
            {
                "kind": "question",
                "user": life.user,
                "id": f"{life.user}-q{number:02d}",
                "type": question.kind,
                "text": question.text,
                "gold": question.gold,
                "asked_at": life.asked.isoformat(),
                "previous": previous,
                "previous_related": bool(related and question.previous),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    lines = []
    for index, (name, sex) in enumerate(USERS, 1):
        for row in rows(build(index, name, sex, args.seed)):
            lines.append(json.dumps(row, ensure_ascii=False))
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} rows to {args.out}")


if __name__ == "__main__":
    main()
