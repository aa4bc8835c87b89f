"""autocog in one page: complete, choose, the probabilities, and the token choice tree as a picture.

.venv/bin/python examples/quickstart.py                    # LLaMa backend, embedded SmolLM2-135M-Instruct
.venv/bin/python examples/quickstart.py --backend tf       # the same model through transformers
.venv/bin/python examples/quickstart.py --model my.gguf    # your own GGUF (or a transformers dir with tf)
"""

import argparse
import shutil
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(description="autocog quickstart")
    parser.add_argument("--backend", choices=["llama", "tf"], default="llama")
    parser.add_argument("--model", default=None, help="GGUF file (llama) or transformers directory (tf)")
    parser.add_argument("--out", default="out", help="folder for the tree picture")
    args = parser.parse_args(argv)

    if args.backend == "llama":
        from autocog.lm import LLaMa

        lm = LLaMa(**LLaMa.create(model_path=args.model), completion_kwargs={"max_new_tokens": 20})
    else:
        from autocog.lm import TfLM

        lm = TfLM(**TfLM.create(model_path=args.model, device="cpu"), completion_kwargs={"max_new_tokens": 20})

    print("complete:", repr(lm.complete("The capital of France is", stop="\n")))

    prompt = "Question: What is the capital of France?\nAnswer:"
    choices = [" Paris", " London", " Berlin", " Paris, France"]
    print("choose:  ", lm.choose(prompt, choices))

    result = lm.choice_distribution(prompt, choices)
    for choice, p, lps in zip(result.choices, result.probs, result.token_logprobs):
        print(f"  {choice!r:<16} p={p:.3f}  token log-probs={[round(x, 3) for x in lps]}")
    for normalization in ("mean", "char"):
        r = lm.choice_distribution(prompt, choices, normalization=normalization)
        print(f"  {normalization:>4}-normalized best: {r.choice!r} (p={r.probs[r.index]:.3f})")

    out = Path(args.out)
    out.mkdir(exist_ok=True)
    picture = out / ("choice_tree.svg" if shutil.which("dot") else "choice_tree.dot")
    result.tree.render(picture, choices=result.choices, probs=result.probs, title=prompt)
    print("tree:    ", picture, f"({len(result.tree.nodes)} unique tokens for {len(choices)} choices)")


if __name__ == "__main__":
    main()
