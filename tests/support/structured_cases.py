"""The structured-output cases shared by the local and the server tests: the course example, extractions, a regex."""

import re

from pydantic import BaseModel, Field

US_PHONE = r"^\(?[2-9]\d{2}\)?[-. ]?\d{3}[-. ]?\d{4}$"


class Client(BaseModel):
    """The course example."""

    name: str
    phone_number: str = Field(pattern=US_PHONE)
    zip_code: str = Field(pattern=r"^\d{5}$")


# --- SmolLM2: sensible content ---------------------------------------------------------------------------

COURSE_PROMPT = (
    "<|im_start|>user\nCreate a client profile with the fields name, phone_number, and zip_code"
    "<|im_end|>\n<|im_start|>assistant\nHere is the client profile in JSON:\n"
)

EXTRACTION_PROMPT = (
    "<|im_start|>user\nExtract the client profile (name, phone_number, zip_code) as JSON from "
    "this message: {text}<|im_end|>\n<|im_start|>assistant\n"
)
EXTRACTIONS = [
    (
        "Hi, this is Maria Lopez. You can reach me at 415-555-0132. I live in San Francisco, 94110.",
        "Maria Lopez",
        "415-555-0132",
        "94110",
    ),
    ("Client: John Smith, phone 212-555-0199, ZIP 10001, New York.", "John Smith", "212-555-0199", "10001"),
    ("Please call Anna Chen on 617-555-0147; her zip code is 02139.", "Anna Chen", "617-555-0147", "02139"),
]


def _check_client(client):
    assert isinstance(client, Client)
    assert re.fullmatch(r"[A-Z][a-z]+( [A-Z][a-z]+)*", client.name), client
    assert re.fullmatch(US_PHONE, client.phone_number) and re.fullmatch(r"\d{5}", client.zip_code)
