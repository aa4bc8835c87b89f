"""Multiple choice with a chain of thought: think first (Complete), then choose the answer (Choose).

The program branches on the answer, and a bounded loop lets the model think again when it is not sure
(once at most). Every explored path comes back scored, best first; the thought tree and the automaton are
written as pictures (SVG with GraphViz, DOT otherwise). SmolLM2-135M is a very small model: the point is
the mechanics, not the accuracy.

    .venv/bin/python examples/mcq_cot.py                 # llama.cpp, embedded SmolLM2-135M-Instruct
    .venv/bin/python examples/mcq_cot.py --backend tf      # the same model through transformers (slower on CPU)
"""

import argparse
import shutil
from pathlib import Path

from autocog.fta import END, Choose, Complete, Program, Text

QUESTIONS = [
    ("What is the capital of France?", ["Berlin", "Paris", "Madrid", "Rome"]),
    ("Which animal barks?", ["cat", "dog", "fish", "bird"]),
]

# SmolLM2's chat format, written out (a Text step is plain text: the model reads the markers as tokens)
USER, ASSISTANT, END_TURN = "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n"


def load(backend):
    if backend == "llama":
        from autocog.lm import LLaMa

        return LLaMa(**LLaMa.create())
    from autocog.lm import TfLM

    return TfLM(**TfLM.create())


def mcq_program(options):
    """question -> reasoning -> answer -> sure? -- No: think again (once), then answer again."""
    return Program(
        [
            Text(
                USER + "{question} Choose one of: {choices}. Explain briefly." + END_TURN + ASSISTANT, name="question"
            ),
            Complete("reasoning", stop="\n", max_tokens=32),
            Text("\nSo the answer is:", name="conclude"),
            Choose("answer", [" " + o for o in options]),
            Text(". Am I sure?", name="check"),
            Choose("sure", {" Yes": END, " No": "rethink"}, width=1),
            Text(" Let me think again:", name="rethink", max_visits=1),
            Complete("second_thought", stop="\n", max_tokens=16, next="conclude"),
        ],
        name="mcq_cot",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["llama", "tf"], default="llama")
    parser.add_argument("--width", type=int, default=2, help="answers explored per Choose")
    parser.add_argument("--out", default="out", help="folder for the pictures")
    args = parser.parse_args(argv)

    lm = load(args.backend)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    suffix = ".svg" if shutil.which("dot") else ".dot"
    for k, (question, options) in enumerate(QUESTIONS):
        prog = mcq_program(options)
        result = prog.run(lm, width=args.width, question=question, choices=", ".join(options))
        best = result.best
        print(f"Q: {question}")
        print(f"  reasoning: {best.values['reasoning'].strip()!r}")
        print(
            f"  best answer: {best.values['answer'][-1].strip()!r}  p={best.probability:.3f}  "
            f"sure: {best.values['sure']}  [{len(result.paths)} path(s)]"
        )
        for path in result.paths[1:]:
            print(
                f"  other path: answers {[a.strip() for a in path.values['answer']]} "
                f"sure {path.values['sure']} p={path.probability:.3f}"
            )
        print(f"  tokens: evaluated {result.tokens.evaluated}, unique in the thought tree {result.tokens.unique}")
        result.render(out / f"mcq_tree_{k}{suffix}", title=question)
        prog.render(out / f"mcq_program_{k}{suffix}", result=result)
    print(f"pictures: {out}/mcq_program_*{suffix}, {out}/mcq_tree_*{suffix}")


if __name__ == "__main__":
    main()
