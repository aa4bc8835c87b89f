"""Random prompts and choice lists for the property tests (seeded: the same cases every run)."""

import random

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "capital",
    "France",
    "Paris",
    "Berlin",
    "answer",
    "yes",
    "no",
    "1",
    "10",
    "100",
    "step",
]


def random_text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def random_choices(rng: random.Random, n: int) -> list[str]:
    choices: set[str] = set()
    while len(choices) < n:
        choices.add(" " + random_text(rng, rng.randint(1, 4)))
    return sorted(choices)


def make_prompts(n: int, seed: int = 0, header: str = "") -> list[str]:
    rng = random.Random(seed)
    return [header + "Question: " + random_text(rng, rng.randint(1, 10)) + "\nAnswer:" for _ in range(n)]
