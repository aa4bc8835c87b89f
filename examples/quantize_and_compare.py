"""From a Hugging Face checkpoint to quantized, evaluated, documented GGUF files, on the embedded SmolLM2.

    .venv/bin/python examples/quantize_and_compare.py --out smollm2-gguf     # ~2-5 minutes on 2 CPU cores

Steps: the transformers checkpoint (`autocog.lm.assets.smollm2_transformers`) -> GGUF F16 (`autocog.gguf.convert`)
-> Q8_0 and Q4_K_M (llama.cpp's quantizer, `autocog.gguf.quantize`) -> the same questions (the bundled
easy_mc.jsonl) scored on all four models through the batch API (`autocog.eval.compare`: accuracy with Wilson
intervals, drift against the transformers model, size, time) -> a plot and a Hugging Face model card
(`autocog.gguf.card`). The same from the shell:

    autocog convert HF_DIR out/smollm2-f16.gguf --outtype f16
    autocog quantize out/smollm2-f16.gguf out/smollm2-q8_0.gguf --type Q8_0
    autocog quantize out/smollm2-f16.gguf out/smollm2-q4_k_m.gguf --type Q4_K_M
    autocog eval --model HF_DIR --model out/smollm2-f16.gguf --model out/smollm2-q8_0.gguf \\
        --model out/smollm2-q4_k_m.gguf --plot out/comparison.png --json out/comparison.json
    autocog card out --results out/comparison.json --plot out/comparison.png \\
        --base-model HuggingFaceTB/SmolLM2-135M-Instruct
"""

import argparse
import time
from pathlib import Path

BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def main(argv=None):
    parser = argparse.ArgumentParser(description="convert, quantize, compare, card")
    parser.add_argument("--out", default="smollm2-gguf", help="output folder (GGUF files, plot, README.md)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions (default all 32)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    args = parser.parse_args(argv)

    from autocog.eval.compare import ModelSpec, compare
    from autocog.gguf.card import write_card
    from autocog.gguf.convert import convert
    from autocog.gguf.quantize import quantize
    from autocog.lm.assets import smollm2_transformers

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    hf_dir = smollm2_transformers()  # cached transformers conversion of the embedded GGUF

    start = time.perf_counter()
    f16 = convert(hf_dir, out / "smollm2-f16.gguf", outtype="f16")
    print(f"convert: {f16.name} {f16.stat().st_size / 1e6:.1f} MB ({time.perf_counter() - start:.1f} s)")
    files = [f16]
    for qtype in ("Q8_0", "Q4_K_M"):
        start = time.perf_counter()
        files.append(quantize(f16, out / f"smollm2-{qtype.lower()}.gguf", qtype, threads=args.threads, progress=False))
        print(
            f"quantize: {files[-1].name} {files[-1].stat().st_size / 1e6:.1f} MB ({time.perf_counter() - start:.1f} s)"
        )

    models = [ModelSpec("tf", str(hf_dir), "transformers (tf)")]
    models += [ModelSpec("llama", str(f), f.stem.split("-")[-1].upper() + " (llama)") for f in files]
    # an F32 KV cache in llama.cpp: the table measures what the weights' format costs, not the cache's
    llama_kwargs = {"type_k": 0, "type_v": 0, **({"n_threads": args.threads} if args.threads else {})}
    table = compare(models, limit=args.limit, load_kwargs={"llama": llama_kwargs})
    print(table.format())
    plot = table.plot(out / "comparison.png")
    (out / "comparison.json").write_text(__import__("json").dumps(table.to_dict(), indent=2))
    card = write_card(out, table, BASE_MODEL, plot=plot)
    print(f"plot: {plot}\ncard: {card}")
    return table


if __name__ == "__main__":
    main()
