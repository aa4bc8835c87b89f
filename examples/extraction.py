"""Structured extraction: a pydantic model becomes a program whose result always validates.

The course example: a client profile (name, phone number, zip code) read from a free-text message. The
phone and zip fields carry regex patterns; the program masks the model's tokens so that only text matching
them can be written, and the name is a JSON-safe string. A second model shows the other field kinds: an
enum (a Choose step: the model picks among the values, with probabilities) and a bounded list.

    .venv/bin/python examples/extraction.py                 # llama.cpp, embedded SmolLM2-135M-Instruct
    .venv/bin/python examples/extraction.py --backend tf      # the same model through transformers (slower on CPU)
"""

import argparse
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from autocog.fta import structured_program


class ClientProfile(BaseModel):
    name: str = Field(max_length=40)
    phone: str = Field(pattern=r"^[0-9]{3}-[0-9]{3}-[0-9]{4}$")
    zip_code: str = Field(pattern=r"^[0-9]{5}$")


class Ticket(BaseModel):
    topic: Literal["billing", "delivery", "technical"]
    items: list[str] = Field(max_length=3)


MESSAGES = [
    "Hi, this is Maria Lopez. You can reach me at 415-555-0132. I live in San Francisco, 94110.",
    "Client: John Smith, phone 212-555-0199, ZIP 10001, New York.",
]
TICKET = "My parcel with the blue kettle and two mugs never arrived, the tracking says it is lost."


def load(backend):
    if backend == "llama":
        from autocog.lm import LLaMa

        return LLaMa(**LLaMa.create())
    from autocog.lm import TfLM

    return TfLM(**TfLM.create())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["llama", "tf"], default="llama")
    parser.add_argument("--out", default="out", help="folder for the pictures")
    args = parser.parse_args(argv)

    lm = load(args.backend)
    profile_program = structured_program(
        ClientProfile, "Extract the client profile from the message.\nMessage: {text}\nProfile (JSON):\n"
    )
    for message in MESSAGES:
        result = profile_program.run(lm, text=message)
        print(f"message: {message}")
        print(f"  profile: {result.value!r}")
        print(f"  tokens: evaluated {result.tokens.evaluated}, unique {result.tokens.unique}")

    ticket_program = structured_program(Ticket, "Support ticket: {text}\nTicket (JSON):\n", string_tokens=8)
    result = ticket_program.run(lm, text=TICKET, width=2)
    print(f"ticket: {TICKET}")
    print(f"  best: {result.value!r}  p={result.best.probability:.3f}")
    topic = result.best.choice("/topic")
    print("  topic distribution:", ", ".join(f"{c}={p:.2f}" for c, p in zip(topic.choices, topic.probs)))
    print(f"  as written:\n{result.best.text.split('(JSON):')[-1]}")

    out = Path(args.out)
    out.mkdir(exist_ok=True)
    suffix = ".svg" if shutil.which("dot") else ".dot"
    result.render(out / f"extraction_tree{suffix}", title="Ticket")
    ticket_program.render(out / f"extraction_program{suffix}", result=result)
    print(f"pictures: {out}/extraction_program{suffix}, {out}/extraction_tree{suffix}")


if __name__ == "__main__":
    main()
