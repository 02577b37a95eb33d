#!/usr/bin/env python3
"""Write the dog-grooming review set that granite-tuner ships (`granite_tuner.datasets`).

The classic prompt-tuning exercise reads a customer review of a dog-grooming business and
answers `1` (satisfied) or `0` (unsatisfied). This script composes such reviews from fragments
written for this project: praise, complaints, mixed verdicts and sarcasm, short and long, about
named dogs of many breeds and the usual services (bath, nail trim, haircut, de-shedding, teeth)
and the usual aspects of a visit (staff, price, timing, booking, cleanliness, communication).

Labels follow what a reasonable reader takes from the whole review: a mixed review gets the
label of its overall verdict (a small gripe in a happy review is still `1`), and sarcasm is
labelled by what it means, not by its words ("Loved paying extra for a wet dog" is `0`).

It is seeded and deterministic: the same seed writes byte-identical files. Run it from the
repository root to regenerate the committed files:

    python scripts/make_grooming_dataset.py            # writes src/granite_tuner/datasets/*.jsonl
    python scripts/make_grooming_dataset.py --check    # fails if the committed files differ
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SEED = 20_241_124
TRAIN_PER_LABEL = 170
TEST_PER_LABEL = 60
OUT_DIR = Path(__file__).resolve().parent.parent / "src" / "granite_tuner" / "datasets"

TRAIN_TEMPLATE = "Comment: {review}\nSatisfaction:\n"
TEST_TEMPLATE = (
    "Classify the customer review as satisfied (1) or unsatisfied (0).\n"
    "Comment: {review}\nSatisfaction:\n"
)
MIN_REVIEW_CHARS = 40
# Every input, test prefix included, stays within 420 characters.
MAX_INPUT_CHARS = 420
MAX_REVIEW_CHARS = MAX_INPUT_CHARS - len(TEST_TEMPLATE.format(review=""))

# --- who and what --------------------------------------------------------------------------------

# (name, "he" or "she")
DOGS: tuple[tuple[str, str], ...] = (
    ("Biscuit", "he"), ("Luna", "she"), ("Max", "he"), ("Pepper", "she"), ("Rufus", "he"),
    ("Daisy", "she"), ("Milo", "he"), ("Bella", "she"), ("Cooper", "he"), ("Hazel", "she"),
    ("Otis", "he"), ("Winnie", "she"), ("Ziggy", "he"), ("Mabel", "she"), ("Tucker", "he"),
    ("Nala", "she"), ("Gus", "he"), ("Olive", "she"), ("Bruno", "he"), ("Poppy", "she"),
    ("Scout", "he"), ("Juniper", "she"), ("Moose", "he"), ("Clover", "she"), ("Archie", "he"),
    ("Penny", "she"), ("Bear", "he"), ("Rosie", "she"), ("Finn", "he"), ("Lola", "she"),
    ("Teddy", "he"), ("Maple", "she"), ("Ollie", "he"), ("Frankie", "she"), ("Louie", "he"),
    ("Sadie", "she"), ("Kona", "he"), ("Waffles", "she"), ("Noodle", "he"), ("Pickles", "she"),
)  # fmt: skip
BREEDS: tuple[str, ...] = (
    "golden retriever", "standard poodle", "mini schnauzer", "shih tzu", "husky",
    "labradoodle", "cocker spaniel", "dachshund", "corgi", "bichon", "Yorkie",
    "border collie", "goldendoodle", "German shepherd", "Maltese", "pug", "beagle", "Samoyed",
    "Bernese mountain dog", "Pomeranian", "Old English sheepdog", "Westie", "cavapoo",
    "Lhasa apso", "Newfoundland", "terrier mix", "greyhound", "Australian shepherd",
    "chow chow", "Havanese",
)  # fmt: skip
AGES = ("two-year-old", "senior", "eight-month-old", "twelve-year-old", "rescue", "young",
        "elderly", "five-year-old", "very anxious", "hyper")  # fmt: skip
STAFF = ("Jess", "Marco", "Priya", "Tom", "Alana", "Deb", "Kenji", "Rosa", "Sam", "Nadia",
         "Luis", "Bethany")  # fmt: skip
SHOPS = ("Paws & Suds", "The Muddy Mutt", "Fluff Stop", "Happy Tails", "Bark Avenue",
         "Scrub-a-Pup", "the salon on Elm Street", "this groomer", "this place",
         "the new place by the park")  # fmt: skip
WHEN = ("last Tuesday", "on Saturday", "this morning", "yesterday", "last week",
        "over the weekend", "on Friday", "a few days ago")  # fmt: skip

# service key -> how a review names it
SERVICES: dict[str, tuple[str, ...]] = {
    "bath": ("a bath", "a bath and blow-dry", "a quick wash"),
    "nails": ("a nail trim", "a nail grind", "nails"),
    "haircut": ("a haircut", "a full groom", "a summer cut", "a breed cut"),
    "deshed": ("a de-shedding treatment", "a de-shed and brush-out", "an undercoat rake"),
    "teeth": ("a teeth cleaning", "a tooth brushing add-on", "a dental clean"),
}

# --- sentences -----------------------------------------------------------------------------------
# Slots: {dog} {breed} {age} {he} {him} {his} {He} {His} {staff} {shop} {price} {hours} {minutes}
# {when} {service}

OPENERS_POSITIVE = (
    "Took {dog}, my {age} {breed}, to {shop} for {service} {when}.",
    "So happy with {shop}!",
    "First visit to {shop} and it won't be the last.",
    "{dog} had {service} here {when}.",
    "We've tried four groomers in town and {shop} is the one.",
    "Brought in our {breed} {dog} for {service}.",
    "Quick review for {shop}.",
    "I was nervous leaving my {age} {breed} with strangers, but wow.",
)
OPENERS_NEGATIVE = (
    "Took {dog}, my {age} {breed}, to {shop} for {service} {when}.",
    "Really disappointed with {shop}.",
    "I wanted to like {shop}, I really did.",
    "{dog} had {service} here {when}.",
    "Writing this so nobody else goes through what we did.",
    "Brought in our {breed} {dog} for {service}.",
    "Long-time customer, but our visit {when} was the last straw.",
    "I don't usually leave reviews, but here we are.",
)
OPENERS_NEUTRAL = (
    "Took {dog}, my {age} {breed}, to {shop} for {service} {when}.",
    "{dog} had {service} at {shop} {when}.",
    "Brought in our {breed} {dog} for {service}.",
    "Second time at {shop} with {dog}.",
)

SERVICE_POSITIVE: dict[str, tuple[str, ...]] = {
    "bath": (
        "{He} came home soft, fluffy and smelling like a bakery.",
        "{His} coat has never been this shiny, and the smell lasted all week.",
        "They got every bit of pond mud out of {his} coat, which I thought was impossible.",
        "The blow-dry was so thorough {he} was still fluffy three days later.",
    ),
    "nails": (
        "{His} nails were done short and smooth without a single quick cut.",
        "No more clicking on the kitchen floor, and {he} didn't even flinch.",
        "They ground the nails instead of clipping, which {dog} tolerates much better.",
        "Nail trim took ten minutes and {he} got a treat for every paw.",
    ),
    "haircut": (
        "The cut is even all over and the face is exactly the teddy-bear look I asked for.",
        "{He} looks like a show dog, and they kept the ears long like I wanted.",
        "They followed the photo I brought to the letter.",
        "The summer cut is short but neat, no patches or clipper lines anywhere.",
    ),
    "deshed": (
        "They took out a whole second dog's worth of undercoat, and my couch thanks them.",
        "The shedding has dropped to almost nothing since the de-shed.",
        "I haven't had to vacuum fur off the stairs once this week.",
        "{His} coat feels lighter and {he} is clearly more comfortable in the heat.",
    ),
    "teeth": (
        "{His} breath is finally bearable and the tartar is visibly gone.",
        "The teeth look whiter and {he} stopped pawing at {his} mouth.",
        "They showed me how to brush {his} teeth at home too, which was kind.",
        "Dental add-on was worth every cent; the vet even noticed at the checkup.",
    ),
}
SERVICE_NEGATIVE: dict[str, tuple[str, ...]] = {
    "bath": (
        "{He} came back still damp and smelling like wet carpet.",
        "There was shampoo left in {his} coat and {he} scratched all night.",
        "Paid for a bath and {he} still had burrs stuck behind the ears.",
        "The so-called blow-dry left {him} frizzy on one side and soaked on the other.",
    ),
    "nails": (
        "They cut {his} nails so short that two of them bled on the way home.",
        "Half the nails were skipped and the dewclaws weren't touched.",
        "{He} was limping after the nail trim and wouldn't let me near {his} paws.",
        "The nails were left with sharp jagged edges that scratched my arms.",
    ),
    "haircut": (
        "The cut is lopsided: one side is visibly shorter than the other.",
        "They shaved {him} down to the skin after I said twice not to.",
        "{His} face looks like it was trimmed in the dark, with bald patches by the eyes.",
        "I asked for a light trim and got a buzz cut with clipper lines everywhere.",
    ),
    "deshed": (
        "The de-shed barely did anything; {he} shed a carpet of fur the same evening.",
        "They raked so hard {his} skin was red and flaky afterwards.",
        "I paid for the full de-shed and they clearly only brushed the back.",
        "{His} undercoat is still matted underneath, they just brushed over the top.",
    ),
    "teeth": (
        "The teeth cleaning was a quick wipe, the tartar is exactly where it was.",
        "{His} gums were bleeding afterwards and nobody told me why.",
        "They charged for the dental add-on and I honestly can't tell it was done.",
        "{He} came back with a sore mouth and wouldn't eat dinner.",
    ),
}
# One sentence per topic at most, so a review does not praise (or blame) the price twice.
ASPECT_POSITIVE: dict[str, tuple[str, ...]] = {
    "staff": (
        "{staff} took their time with my nervous {breed} and it showed.",
        "{staff} at the front desk remembered {dog}'s name from the last visit.",
        "The staff clearly love dogs; {dog} ran in without pulling back for once.",
        "{staff} explained everything they did and gave me tips for brushing at home.",
    ),
    "price": (
        "The price was fair, ${price} for everything, with no surprise add-ons.",
        "At ${price} it's not the cheapest, but you get what you pay for.",
    ),
    "booking": (
        "Booking online took two minutes and they had a slot the same week.",
        "Rescheduling was easy when I got sick, no fee and no fuss.",
    ),
    "timing": (
        "They were ready on time, and pickup took less than five minutes.",
        "{He} was done in about {minutes} minutes, exactly as promised.",
        "They called when {he} was ready instead of keeping {him} in a crate for hours.",
    ),
    "communication": (
        "They texted me a photo halfway through so I knew {he} was fine.",
        "They noticed a small lump on {his} side and told me to have the vet check it.",
    ),
    "cleanliness": (
        "The salon was spotless and didn't smell like wet dog at all.",
        "Everything was clean, down to the towels and the crates.",
    ),
    "handling": (
        "{dog} usually hates being handled, but {he} came out wagging.",
        "They were patient with {his} bad hip and let {him} rest between steps.",
    ),
}
ASPECT_NEGATIVE: dict[str, tuple[str, ...]] = {
    "staff": (
        "The front desk was rude when I asked about the extra charge.",
        "{staff} barely looked up from the phone when I dropped {him} off.",
        "When I complained, the manager said my dog was 'just difficult'.",
        "They handed me the wrong leash and seemed annoyed when I pointed it out.",
    ),
    "price": (
        "The quote was ${price} lower than what I was charged, with no explanation.",
        "${price} for that is daylight robbery.",
        "They added a 'matting fee' at pickup without calling me first.",
    ),
    "booking": (
        "My online booking just vanished and nobody answered the phone to sort it out.",
        "They cancelled on the morning of the appointment, for the second time.",
    ),
    "timing": (
        "I was told one hour and it took {hours} hours, with no call or update.",
        "{He} sat in a crate for {hours} hours after being finished.",
    ),
    "communication": (
        "I found a small cut on {his} ear that nobody mentioned.",
        "Nobody could tell me which groomer had worked on {him}.",
    ),
    "cleanliness": (
        "The waiting area smelled awful and the kennels looked like nobody had cleaned them.",
        "There was hair and water all over the floor and a dog barking in a filthy crate.",
    ),
    "handling": (
        "{dog} was shaking when I picked {him} up and hid under the bed all evening.",
        "I could hear {him} crying from the lobby and nobody went to check.",
    ),
}
# Small gripes that do not sink an otherwise happy review, and small pluses that do not save
# an unhappy one.
MINOR_NEGATIVE = (
    "Parking is a pain on weekdays.",
    "The wait was about {minutes} minutes longer than promised.",
    "It's not the cheapest place in town.",
    "The waiting room is tiny and a bit loud.",
    "Their website is clunky and I had to call to book.",
    "The bow they put on {him} lasted about four seconds.",
    "They're closed on Mondays, which is annoying.",
    "Pickup was a few minutes late.",
    "The card machine was down so I had to go to an ATM.",
    "I had to remind them about the ear cleaning.",
)
MINOR_POSITIVE = (
    "The receptionist was friendly enough.",
    "Booking was easy, I'll give them that.",
    "The salon looks nice from the outside.",
    "The price seemed reasonable at first.",
    "They did get {him} in on short notice.",
    "The shampoo smelled nice.",
    "{staff} seemed to mean well.",
    "The bandana they put on {him} was cute.",
    "They were on time, at least.",
)
TURN_POSITIVE = ("But honestly,", "That said,", "Still,", "Other than that,", "But")
TURN_NEGATIVE = ("But", "Unfortunately,", "Then again,", "Sadly,", "However,")

CLOSERS_POSITIVE = (
    "We'll be back for sure.",
    "Highly recommend.",
    "Five stars from me and from {dog}.",
    "Already booked the next appointment.",
    "Thank you, {staff}!",
    "Worth every penny.",
    "Couldn't be happier.",
    "Our new regular groomer.",
    "Ten out of ten.",
    "{dog} says thanks too.",
)
CLOSERS_NEGATIVE = (
    "Won't be returning.",
    "Save your money and go elsewhere.",
    "One star, and that's generous.",
    "Never again.",
    "Very disappointed.",
    "Avoid.",
    "I've already found a new groomer.",
    "Not worth the money or the stress.",
    "I expected a lot better.",
    "Do not recommend.",
)

# Sarcasm: positive words, unhappy meaning (label 0).
SARCASM = (
    "Nothing says professional like picking up {dog} still soaking wet and half shaved.",
    "Wow, {hours} hours for a nail trim. Really efficient operation you've got there.",
    "Loved paying ${price} to get my {breed} back looking like a lawn mower ran over {him}.",
    "Great haircut, if the goal was to make {dog} look like a patchwork quilt.",
    "Five stars for creativity: I dropped off a {breed} and picked up a stranger with a bald spot.",
    "Thanks so much for the surprise ${price} fee. Exactly what I wanted this week.",
    "Oh sure, tell me again how the mats were 'already there' when I brushed {him} that morning.",
    "Fantastic service, nobody answered the phone for {hours} hours, very relaxing for me.",
    "Brilliant idea to put my {age} {breed} next to a barking husky for an hour. Genius.",
    "Love how {dog} now jumps out of the car the moment we pull into the lot. Wonder why.",
    "Really impressive how you managed to lose a dog's collar in a room that small.",
    "What a treat to find {dog} still shaking an hour after I got {him} home.",
    "Sure, 'a little trim' means shaved bald. My mistake for not reading your mind.",
    "Amazing value: ${price} and {he} smells exactly like {he} did before.",
    "Truly a spa day. For the fleas, which all came back with {him}.",
    "So glad I took the morning off work to wait {hours} hours in your lobby.",
    "Best groomer ever, if you enjoy nicks, razor burn and a dog who won't look at you.",
    "Can't wait to come back and pay ${price} again to have {his} nails bleed.",
)
SARCASM_CLOSERS = (
    "Truly a five-star experience. Not.",
    "Can't wait to never come back.",
    "Bravo.",
    "Keep up the great work, I guess.",
    "Really, thanks.",
    "",
)

# Irony with a happy meaning (label 1).
PLAYFUL_POSITIVE = (
    "My only complaint is that {dog} now looks better groomed than I do.",
    "Warning: your {breed} will come back so fluffy you won't recognize {him}.",
    "Downside: {dog} now drags me to their door every time we walk past.",
    "Terrible news for my lint roller business, {his} shedding has stopped.",
    "I'm a little jealous that {dog} got a better haircut than I did this year.",
    "Now {dog} sulks when it's me giving the bath, because mine are apparently worse.",
    "Be warned, {he} comes home smelling so good you'll want to sniff {him} all day.",
    "The worst part was saying goodbye, {dog} didn't want to leave.",
)

SHORT_POSITIVE = (
    "Great job on {dog}'s nails, quick and painless!",
    "{dog} looks amazing after {his} haircut. Thank you!",
    "Friendly staff, fair price, happy {breed}.",
    "Perfect bath, {dog} smells wonderful. Will be back.",
    "Best de-shed we've ever had, the fur tumbleweeds are gone.",
    "Gentle with my {age} {breed}. Highly recommend.",
    "On time, clean salon, and a very fluffy {dog}.",
    "{staff} is a magician with clippers. Love the cut!",
    "Quick, kind and affordable. {dog} approves.",
    "Teeth cleaning made a real difference, thanks {staff}!",
    "Lovely people and a lovely result. Thank you!",
    "Our {breed} came home clean, calm and happy.",
)
SHORT_NEGATIVE = (
    "Never again. {dog} came home with nicks all over.",
    "Rude staff and a lopsided cut. Avoid.",
    "Waited {hours} hours for a bath. Not worth it.",
    "Overpriced, and {dog} still smells like a wet dog.",
    "They cut {his} nails until they bled. Awful.",
    "Cancelled on us twice. Found someone else.",
    "Dirty salon, stressed dog, surprise fees. No thanks.",
    "{dog} hasn't been the same since. Very upset.",
    "Charged ${price} for a bath that never happened properly.",
    "Bald patches on {his} face. Terrible work.",
    "Nobody answers the phone and the cut was awful.",
    "My {breed} came back limping. Unacceptable.",
)


# --- composing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    text: str
    label: str  # "1" satisfied, "0" unsatisfied
    kind: str


def _slots(rng: random.Random) -> tuple[str, dict[str, str]]:
    """A service key and the values for every slot, drawn once per review."""
    name, pronoun = rng.choice(DOGS)
    service = rng.choice(sorted(SERVICES))
    he, him, his = ("he", "him", "his") if pronoun == "he" else ("she", "her", "her")
    values = {
        "dog": name,
        "breed": rng.choice(BREEDS),
        "age": rng.choice(AGES),
        "he": he,
        "him": him,
        "his": his,
        "He": he.capitalize(),
        "His": his.capitalize(),
        "staff": rng.choice(STAFF),
        "shop": rng.choice(SHOPS),
        "price": str(rng.randrange(35, 145, 5)),
        "hours": str(rng.randint(3, 7)),
        "minutes": str(rng.choice((15, 20, 30, 40, 45, 60))),
        "when": rng.choice(WHEN),
        "service": rng.choice(SERVICES[service]),
    }
    return service, values


def _fill(parts: Sequence[str], values: dict[str, str]) -> str:
    text = " ".join(part.format_map(values) for part in parts if part)
    return text[0].upper() + text[1:]


def _aspects(
    rng: random.Random, pool: dict[str, tuple[str, ...]], low: int, high: int
) -> list[str]:
    """Between `low` and `high` sentences, each about a different topic."""
    topics = rng.sample(sorted(pool), rng.randint(low, high))
    return [rng.choice(pool[topic]) for topic in topics]


def _minor(rng: random.Random, pool: Sequence[str], low: int, high: int) -> list[str]:
    return rng.sample(list(pool), rng.randint(low, high))


def _lower_first(template: str) -> str:
    """The sentence template as it reads after a connective ("But {he} ...", "But the ...")."""
    for capital in ("{He}", "{His}"):
        if template.startswith(capital):
            return capital.lower() + template[len(capital) :]
    if template.startswith(("{", "I ", "I'")):  # a name, or "I"
        return template
    return template[0].lower() + template[1:]


def _positive(rng: random.Random) -> Review:
    service, values = _slots(rng)
    parts = [
        rng.choice(OPENERS_POSITIVE),
        rng.choice(SERVICE_POSITIVE[service]),
        *_aspects(rng, ASPECT_POSITIVE, 0, 3),
        rng.choice(CLOSERS_POSITIVE),
    ]
    return Review(_fill(parts, values), "1", "praise")


def _negative(rng: random.Random) -> Review:
    service, values = _slots(rng)
    parts = [
        rng.choice(OPENERS_NEGATIVE),
        rng.choice(SERVICE_NEGATIVE[service]),
        *_aspects(rng, ASPECT_NEGATIVE, 0, 3),
        rng.choice(CLOSERS_NEGATIVE),
    ]
    return Review(_fill(parts, values), "0", "complaint")


def _mixed_positive(rng: random.Random) -> Review:
    """A gripe or two, then a clearly happy verdict: satisfied."""
    service, values = _slots(rng)
    turn = rng.choice(TURN_POSITIVE)
    main = rng.choice(SERVICE_POSITIVE[service])
    parts = [
        rng.choice(OPENERS_NEUTRAL) if rng.random() < 0.6 else "",
        *_minor(rng, MINOR_NEGATIVE, 1, 2),
        f"{turn} {_lower_first(main)}",
        *_aspects(rng, ASPECT_POSITIVE, 0, 1),
        rng.choice(CLOSERS_POSITIVE),
    ]
    return Review(_fill(parts, values), "1", "mixed")


def _mixed_negative(rng: random.Random) -> Review:
    """A kind word or two, then a clearly unhappy verdict: unsatisfied."""
    service, values = _slots(rng)
    turn = rng.choice(TURN_NEGATIVE)
    main = rng.choice(SERVICE_NEGATIVE[service])
    parts = [
        rng.choice(OPENERS_NEUTRAL) if rng.random() < 0.6 else "",
        *_minor(rng, MINOR_POSITIVE, 1, 2),
        f"{turn} {_lower_first(main)}",
        *_aspects(rng, ASPECT_NEGATIVE, 0, 1),
        rng.choice(CLOSERS_NEGATIVE),
    ]
    return Review(_fill(parts, values), "0", "mixed")


def _sarcastic(rng: random.Random) -> Review:
    _, values = _slots(rng)
    first, second = rng.sample(SARCASM, 2)
    parts = [first, second if rng.random() < 0.4 else "", rng.choice(SARCASM_CLOSERS)]
    return Review(_fill(parts, values), "0", "sarcasm")


def _playful(rng: random.Random) -> Review:
    service, values = _slots(rng)
    parts = [
        rng.choice(OPENERS_POSITIVE) if rng.random() < 0.5 else "",
        rng.choice(SERVICE_POSITIVE[service]) if rng.random() < 0.5 else "",
        rng.choice(PLAYFUL_POSITIVE),
        rng.choice(CLOSERS_POSITIVE) if rng.random() < 0.5 else "",
    ]
    return Review(_fill(parts, values), "1", "irony")


def _short(pool: Sequence[str], label: str) -> Callable[[random.Random], Review]:
    def make(rng: random.Random) -> Review:
        _, values = _slots(rng)
        text = _fill([rng.choice(pool)], values)
        if rng.random() < 0.25:  # some people write in a hurry
            text = text.lower().rstrip(".")
        return Review(text, label, "short")

    return make


# (maker, weight) per label: what kinds of review make up each class.
KINDS: dict[str, tuple[tuple[Callable[[random.Random], Review], int], ...]] = {
    "1": (
        (_positive, 50),
        (_mixed_positive, 25),
        (_short(SHORT_POSITIVE, "1"), 15),
        (_playful, 10),
    ),
    "0": (
        (_negative, 42),
        (_mixed_negative, 23),
        (_sarcastic, 20),
        (_short(SHORT_NEGATIVE, "0"), 15),
    ),
}


def make_reviews(rng: random.Random, per_label: int, taken: set[str]) -> list[Review]:
    """`per_label` new reviews of each label, none of whose text is in `taken` (updated)."""
    reviews: list[Review] = []
    for label in ("1", "0"):
        makers = [maker for maker, _ in KINDS[label]]
        weights = [weight for _, weight in KINDS[label]]
        made = 0
        attempts = 0
        while made < per_label:
            attempts += 1
            if attempts > per_label * 200:
                raise RuntimeError(f"could not compose {per_label} distinct reviews ({label})")
            review = rng.choices(makers, weights)[0](rng)
            length = len(review.text)
            if review.text in taken or not MIN_REVIEW_CHARS <= length <= MAX_REVIEW_CHARS:
                continue
            taken.add(review.text)
            reviews.append(review)
            made += 1
    rng.shuffle(reviews)
    return reviews


def render(reviews: Sequence[Review], template: str) -> str:
    return "".join(
        json.dumps(
            {"input": template.format(review=review.text), "output": review.label},
            ensure_ascii=False,
        )
        + "\n"
        for review in reviews
    )


def build(seed: int = SEED) -> dict[str, str]:
    """File name -> content of both files, for `seed`."""
    rng = random.Random(seed)  # noqa: S311  (reproducible data, not secrets)
    taken: set[str] = set()
    test = make_reviews(rng, TEST_PER_LABEL, taken)
    train = make_reviews(rng, TRAIN_PER_LABEL, taken)
    return {
        "grooming_train.jsonl": render(train, TRAIN_TEMPLATE),
        "grooming_test.jsonl": render(test, TEST_TEMPLATE),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder to write into")
    parser.add_argument("--check", action="store_true", help="only compare with the files in --out")
    args = parser.parse_args(argv)
    files = build(args.seed)
    stale = [name for name, content in files.items() if _read(args.out / name) != content]
    if args.check:
        for name in stale:
            print(
                f"{args.out / name} differs from what seed {args.seed} generates", file=sys.stderr
            )
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (args.out / name).write_text(content, encoding="utf-8", newline="\n")
        print(f"wrote {args.out / name} ({content.count(chr(10))} examples)")
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
