#!/usr/bin/env python3
"""Writes the fine-tuning Short's dataset: data/finetune/person-json/{train,heldout}.jsonl.

The task: turn a sentence about a person into a JSON record with four fixed keys, in a fixed
order, with the age as a number:

    {"name": "Maria Lopez", "age": 34, "city": "Lisbon", "occupation": "nurse"}

The instruction never names the keys, so a model can only get them right by having seen
examples: in its prompt (few-shot) or in training (LoRA). Every sentence is made here from
templates and word lists, with a fixed seed, so the files are reproducible and free of
licensing questions. The held-out set shares no first name and no surname with the training
set, so copying a memorised answer cannot pass it.

Run: python3 scripts/make-finetune-data.py   (rewrites both files; same seed, same bytes)
"""
import json
import random
from pathlib import Path

INSTRUCTION = "Turn this sentence into a JSON record."

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
CITIES = """Lisbon Osaka Lagos Toronto Milan Beirut Oslo Pune Lyon Seville Kyoto Karachi Dublin
Sofia Accra Hamburg Bogota Shanghai Krakow Nairobi Denver Chennai Vienna Cairo Mumbai Marseille
Enugu Kazan Nantes Amman Bergen Gdansk Valencia Boston Minsk Porto Dhaka Prague Zurich Uppsala
Melbourne Santiago Hanoi Tunis Leeds Quito Busan Tbilisi Montreal Perth""".split()
OCCUPATIONS = [
    "nurse", "carpenter", "software engineer", "teacher", "chef", "architect", "pilot",
    "pharmacist", "electrician", "journalist", "dentist", "baker", "librarian", "photographer",
    "firefighter", "accountant", "plumber", "translator", "veterinarian", "mechanic",
    "biologist", "lawyer", "tailor", "farmer", "musician", "police officer", "physiotherapist",
    "graphic designer", "bus driver", "economist",
]
TEMPLATES = [
    "{name}, {age}, works as a {job} in {city}.",
    "{name} is a {age}-year-old {job} from {city}.",
    "In {city} lives a {age}-year-old {job} named {name}.",
    "At {age}, {name} has settled in {city}, where {pronoun} works as a {job}.",
    "Meet {name}: a {job} based in {city}, aged {age}.",
    "{name} moved to {city} last year and, at {age}, started working as a {job}.",
    "The {job} {name} ({age}) has lived in {city} for a decade.",
    "{name} turned {age} this spring; {pronoun} is a {job} in {city}.",
    "Our new neighbour in {city} is {name}, a {job} who is {age} years old.",
    "Working as a {job} in {city}, {name} celebrated {possessive} {ordinal} birthday last week.",
]


def ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def article(job: str) -> str:
    return "an" if job[0] in "aeiou" else "a"


def example(rng: random.Random, firsts, lasts) -> dict:
    name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
    age = rng.randint(19, 78)
    city = rng.choice(CITIES)
    job = rng.choice(OCCUPATIONS)
    pronoun, possessive = rng.choice([("she", "her"), ("he", "his"), ("they", "their")])
    template = rng.choice(TEMPLATES)
    if pronoun == "they":
        template = template.replace("{pronoun} works", "{pronoun} work").replace(
            "{pronoun} is", "{pronoun} are"
        )
    sentence = template.format(
        name=name,
        age=age,
        ordinal=ordinal(age),
        city=city,
        job=job,
        pronoun=pronoun,
        possessive=possessive,
    )
    sentence = sentence.replace(f"a {job}", f"{article(job)} {job}")
    sentence = sentence[0].upper() + sentence[1:]
    record = {"name": name, "age": age, "city": city, "occupation": job}
    return {"instruction": INSTRUCTION, "input": sentence, "output": json.dumps(record)}


def main() -> None:
    rng = random.Random(20261130)
    out = Path(__file__).resolve().parent.parent / "data" / "finetune" / "person-json"
    out.mkdir(parents=True, exist_ok=True)
    for name, count, firsts, lasts in [
        ("train", 100, FIRST_TRAIN, LAST_TRAIN),
        ("heldout", 60, FIRST_HELDOUT, LAST_HELDOUT),
    ]:
        rows = [example(rng, firsts, lasts) for _ in range(count)]
        with open(out / f"{name}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(f"wrote {count} examples to {out / (name + '.jsonl')}")


if __name__ == "__main__":
    main()
