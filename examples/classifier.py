"""A classifier as a program: one Choose picks the label, the label picks what comes next.

Sentiment first; a negative message then gets a second question (is it urgent?) that the others skip, so
the automaton branches. The label's full distribution comes from the Choose's `ChoiceResult`, and its token
choice tree can be drawn (``path.choice("sentiment").tree``). SmolLM2-135M is a very small model: the prompt
is the simplest one it follows (it reads neutral messages as negative).

    .venv/bin/python examples/classifier.py                 # llama.cpp, embedded SmolLM2-135M-Instruct
    .venv/bin/python examples/classifier.py --backend tf      # the same model through transformers (slower on CPU)
"""

import argparse
import shutil
from pathlib import Path

from autocog.fta import END, Choose, Program, Text

MESSAGES = [
    "I love this phone, the battery lasts all day and the screen is gorgeous!",
    "My order arrived broken and nobody answers my emails. I want a refund now.",
    "The package was delivered on Tuesday.",
    "Thank you so much for the quick help, you made my day.",
]


def load(backend):
    if backend == "llama":
        from autocog.lm import LLaMa

        return LLaMa(**LLaMa.create())
    from autocog.lm import TfLM

    return TfLM(**TfLM.create())


def classifier_program():
    """message -> sentiment; negative -> urgent? (yes / no); the others end at once."""
    return Program(
        [
            Text("Review: {message}\nThis review is", name="review"),
            Choose("sentiment", {" positive": END, " negative": "urgency", " neutral": END}),
            Text(".\nDoes the customer need an answer today (yes or no)? Answer:", name="urgency"),
            Choose("urgent", [" yes", " no"]),
        ],
        name="classifier",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["llama", "tf"], default="llama")
    parser.add_argument("--out", default="out", help="folder for the pictures")
    args = parser.parse_args(argv)

    lm = load(args.backend)
    prog = classifier_program()
    for message in MESSAGES:
        result = prog.run(lm, message=message)
        best = result.best
        dist = best.choice("sentiment")
        probs = ", ".join(f"{c.strip()}={p:.2f}" for c, p in zip(dist.choices, dist.probs))
        urgent = f"  urgent:{best.values['urgent']}" if "urgent" in best.values else ""
        print(f"{message[:60]!r:<64} best: {best.values['sentiment'].strip():<8} ({probs}){urgent}")
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    suffix = ".svg" if shutil.which("dot") else ".dot"
    prog.render(out / f"classifier_program{suffix}")
    dist.tree.render(out / f"classifier_choice_tree{suffix}", choices=dist.choices, probs=dist.probs)
    print(f"pictures: {out}/classifier_program{suffix}, {out}/classifier_choice_tree{suffix}")


if __name__ == "__main__":
    main()
