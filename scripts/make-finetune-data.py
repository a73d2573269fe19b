#!/usr/bin/env python3
"""Writes the fine-tuning Short's dataset: data/finetune/people-json/{train,validation,heldout}.jsonl.

The task: turn a sentence about people into JSON, one object per person with four keys in a
fixed order (the age a number, null for what the sentence does not say), a list when the
sentence is about two people:

    {"name": "Maria Lopez", "age": 34, "city": "Lisbon", "occupation": "nurse"}

The instruction states that schema, so a model that follows instructions can answer without
examples; what training (or examples in the prompt) adds is doing it reliably on sentences
written in many ways.

What the held-out set tests is generalisation, not copying:
- 3 of the 10 one-person templates, and one template of each harder kind, appear only in the
  held-out set ("unseen template"); the others appear in training too ("seen template");
- its people have first names and surnames that training never uses, and some of its cities and
  occupations are never in training ("unseen city", "unseen occupation");
- harder inputs sit beside the plain ones: two people in a sentence, a missing field that must
  become null, the age in words, the age as a birth year.
Every held-out and validation record carries these `tags` (scored apart) and its `template`.

The validation set is drawn like the training set (same templates, names, cities and
occupations, other sentences): hyper-parameters are chosen on it, never on the held-out set.

Every sentence is made here from templates and word lists, with a fixed seed, so the files are
reproducible and free of licensing questions.

Run: python3 scripts/make-finetune-data.py   (rewrites the three files; same seed, same bytes)
"""
import json
import random
from pathlib import Path

YEAR = 2026
INSTRUCTIONS = [
    "Turn this sentence into JSON with the keys name, age (a number), city and occupation. "
    f"Use null for what it does not say, and a list of objects if it is about several people. It is {YEAR}.",
    "Extract the person in this sentence as a JSON object: name, age (number), city, occupation; "
    f"null when not stated; a list of such objects when there are several people. The year is {YEAR}.",
    "Return JSON for the sentence below (keys: name, age as a number, city, occupation; null if "
    f"missing; a list for more than one person). Assume the year {YEAR}.",
]

FIRST_TRAIN = """Maria Kenji Amara Lucas Sofia Omar Ingrid Rahul Chloe Mateo Yuki Fatima Liam
Elena Kwame Hannah Diego Mei Tomasz Aisha Noah Priya Felix Zara Arjun Clara Emeka Olga Hugo
Leila Sven Nadia Pablo Grace Ivan Rosa Tariq Anna Jonas Lina""".split()
FIRST_HELDOUT = """Beatriz Hiroshi Zainab Marco Freya Youssef Katarina Vikram Elodie Rafael
Sakura Amina Oscar Tatiana Kofi Ines Daniel Min Piotr Salma""".split()
LAST_TRAIN = """Lopez Sato Okafor Silva Rossi Haddad Larsen Sharma Martin Garcia Tanaka Khan
Murphy Petrova Mensah Fischer Ruiz Chen Nowak Bello Walker Iyer Bauer Ali Patel Dubois Eze
Ivanova Moreau Nasser Berg Kowalski Torres Adams Smirnov Costa Rahman Novak Weber Lindqvist""".split()
LAST_HELDOUT = """Almeida Yamamoto Abubakar Bianchi Nilsson Benali Horvat Reddy Lefebvre Mendes
Kobayashi Diallo Jensen Volkova Asante Navarro Cohen Park Wojcik Farouk""".split()
CITIES_TRAIN = """Lisbon Osaka Lagos Toronto Milan Beirut Oslo Pune Lyon Seville Kyoto Karachi Dublin
Sofia Accra Hamburg Bogota Shanghai Krakow Nairobi Denver Chennai Vienna Cairo Mumbai Marseille
Enugu Kazan Nantes Amman Bergen Gdansk Valencia Boston Minsk Porto Dhaka Prague Zurich Uppsala""".split()
CITIES_UNSEEN = "Melbourne Santiago Hanoi Tunis Leeds Quito Busan Tbilisi Montreal Perth".split()
OCCUPATIONS_TRAIN = [
    "nurse", "carpenter", "software engineer", "teacher", "chef", "architect", "pilot",
    "pharmacist", "electrician", "journalist", "dentist", "baker", "librarian", "photographer",
    "firefighter", "accountant", "plumber", "translator", "veterinarian", "mechanic",
    "biologist", "lawyer", "tailor", "farmer",
]
OCCUPATIONS_UNSEEN = [
    "musician", "police officer", "physiotherapist", "graphic designer", "bus driver", "economist",
]

# (kind, template id, text, fields it states). Ids ending in "u" are held-out only.
ALL = ("name", "age", "city", "occupation")
ONE = [
    ("one-0", "{name}, {age}, works as {a_job} in {city}."),
    ("one-1", "{name} is {a_age_year_old} {job} from {city}."),
    ("one-2", "In {city} lives {a_age_year_old} {job} named {name}."),
    ("one-3", "At {age}, {name} has settled in {city}, where {pronoun} {works} as {a_job}."),
    ("one-4", "Meet {name}: {a_job} based in {city}, aged {age}."),
    ("one-5", "{name} moved to {city} last year and, at {age}, started working as {a_job}."),
    ("one-6", "{name} turned {age} this spring; {pronoun} {is_} {a_job} in {city}."),
    ("one-7u", "The {job} {name} ({age}) has lived in {city} for a decade."),
    ("one-8u", "Our new neighbour in {city} is {name}, {a_job} who is {age} years old."),
    ("one-9u", "Working as {a_job} in {city}, {name} celebrated {possessive} {ordinal} birthday last week."),
]
BIRTH = [
    ("born-0", "{name}, born in {year}, works as {a_job} in {city}."),
    ("born-1", "Born in {year}, {name} is {a_job} living in {city}."),
    ("born-2u", "{name} ({job}, {city}) was born in {year}."),
]
MISSING = [
    ("missing-age-0", "{name} works as {a_job} in {city}.", ("name", "city", "occupation")),
    ("missing-city-0", "{name}, {age}, is {a_job}.", ("name", "age", "occupation")),
    ("missing-job-0", "{name} is {age} and lives in {city}.", ("name", "age", "city")),
    ("missing-city-1u", "At {age}, {name} still works as {a_job}.", ("name", "age", "occupation")),
]
TWO = [
    ("two-0", "{name}, {age}, is {a_job} in {city}, and {possessive} friend {name2}, {age2}, is {a_job2} in {city2}."),
    ("two-1", "{name}, {a_age_year_old} {job}, shares a flat in {city} with {name2}, {a_age2_year_old} {job2}."),
    ("two-2u", "Two neighbours in {city}: {name}, {age}, {a_job}, and {name2}, {age2}, {a_job2}."),
]

UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
ORD = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
       "nine": "ninth", "twelve": "twelfth"}


def words(n: int) -> str:
    if n < 20:
        return UNITS[n]
    tens, unit = divmod(n, 10)
    return TENS[tens] + ("" if unit == 0 else "-" + UNITS[unit])


def ordinal_words(n: int) -> str:
    w = words(n)
    head, _, last = w.rpartition("-")
    if last in ORD:
        last = ORD[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head}-{last}" if head else last


def ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def with_article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


class Pools:
    def __init__(self, firsts, lasts, cities, jobs):
        self.firsts, self.lasts, self.cities, self.jobs = firsts, lasts, cities, jobs

    def person(self, rng: random.Random, in_words: bool) -> dict:
        age = rng.randint(19, 78)
        return {
            "name": f"{rng.choice(self.firsts)} {rng.choice(self.lasts)}",
            "age": age,
            "age_text": words(age) if in_words else str(age),
            "city": rng.choice(self.cities),
            "occupation": rng.choice(self.jobs),
        }


def render(template: str, p: dict, q: dict | None, rng: random.Random, in_words: bool) -> str:
    pronoun, possessive = rng.choice([("she", "her"), ("he", "his"), ("they", "their")])
    age_text = p["age_text"]
    values = {
        "name": p["name"],
        "age": age_text,
        "a_age_year_old": with_article(f"{age_text}-year-old"),
        "ordinal": ordinal_words(p["age"]) if in_words else ordinal(p["age"]),
        "year": YEAR - p["age"],
        "city": p["city"],
        "job": p["occupation"],
        "a_job": with_article(p["occupation"]),
        "pronoun": pronoun,
        "possessive": possessive,
        "works": "work" if pronoun == "they" else "works",
        "is_": "are" if pronoun == "they" else "is",
    }
    if q is not None:
        values.update({
            "name2": q["name"],
            "age2": q["age_text"],
            "a_age2_year_old": with_article(f"{q['age_text']}-year-old"),
            "city2": q["city"],
            "job2": q["occupation"],
            "a_job2": with_article(q["occupation"]),
        })
    sentence = template.format(**values)
    return sentence[0].upper() + sentence[1:]


def record(p: dict, stated=ALL) -> dict:
    return {k: (p[k] if k in stated else None) for k in ALL}


def example(rng: random.Random, pools: Pools, seen_only: bool, unseen_template: bool) -> dict:
    def pick(templates):
        unseen = [t for t in templates if t[0].endswith("u")]
        seen = [t for t in templates if not t[0].endswith("u")]
        return rng.choice(unseen if unseen_template and not seen_only else seen)

    kind = rng.choices(
        ["one person", "age in words", "birth year", "missing field", "two people"],
        weights=[40, 15, 15, 15, 15],
    )[0]
    in_words = kind == "age in words"
    p = pools.person(rng, in_words)
    q = None
    if kind in ("one person", "age in words"):
        template_id, template = pick(ONE)
        output = record(p)
    elif kind == "birth year":
        template_id, template = pick(BIRTH)
        output = record(p)
    elif kind == "missing field":
        template_id, template, stated = pick(MISSING)
        output = record(p, stated)
    else:
        template_id, template = pick(TWO)
        q = pools.person(rng, False)
        while q["name"] == p["name"]:
            q = pools.person(rng, False)
        if template_id != "two-0":
            q["city"] = p["city"]
        output = [record(p), record(q)]
    sentence = render(template, p, q, rng, in_words)
    tags = ["unseen template" if template_id.endswith("u") else "seen template", kind]
    people = [p] if q is None else [p, q]
    if any(x["city"] in CITIES_UNSEEN for x in people) and "city" in template:
        tags.append("unseen city")
    if any(x["occupation"] in OCCUPATIONS_UNSEEN for x in people) and "job" in template:
        tags.append("unseen occupation")
    return {
        "instruction": rng.choice(INSTRUCTIONS),
        "input": sentence,
        "output": json.dumps(output),
        "template": template_id,
        "tags": tags,
    }


def main() -> None:
    rng = random.Random(20261204)
    training_pools = Pools(FIRST_TRAIN, LAST_TRAIN, CITIES_TRAIN, OCCUPATIONS_TRAIN)
    # Held-out people are new; 2 in 5 of their cities and occupations never occur in training.
    heldout_pools = Pools(
        FIRST_HELDOUT,
        LAST_HELDOUT,
        CITIES_TRAIN[:15] + CITIES_UNSEEN,
        OCCUPATIONS_TRAIN[:9] + OCCUPATIONS_UNSEEN,
    )
    drawn = [example(rng, training_pools, True, False) for _ in range(130)]
    splits = {
        "train": drawn[:100],
        "validation": drawn[100:],
        # Half the held-out set from the training templates, half from templates it never saw.
        "heldout": [example(rng, heldout_pools, False, i % 2 == 1) for i in range(80)],
    }
    out = Path(__file__).resolve().parent.parent / "data" / "finetune" / "people-json"
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with open(out / f"{name}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(f"wrote {len(rows)} examples to {out / (name + '.jsonl')}")


if __name__ == "__main__":
    main()
