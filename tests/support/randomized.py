"""Random prompts and choice lists for the property tests."""

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


def random_text(rng, n_words):
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def random_choices(rng, n):
    choices = set()
    while len(choices) < n:
        choices.add(" " + random_text(rng, rng.randint(1, 4)))
    return sorted(choices)
