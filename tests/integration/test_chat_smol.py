"""Chat templates and streaming on SmolLM2-135M-Instruct: TfLM, LLaMa and OpenAI through llama_cpp.server (slow)."""

import subprocess
import sys

import numpy as np
import pytest

from autocog.lm import ChatTemplateError

pytestmark = pytest.mark.slow

CONVERSATIONS = {
    "system+user": [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "multi-turn": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What do bees make?"},
    ],
    "no-system": [{"role": "user", "content": "Is the sky blue? Answer Yes or No."}],
}
CHAT_QUESTIONS = [
    ("What is the capital of France?", ["Paris", "London", "Berlin"]),
    ("What is the capital of Japan?", ["Madrid", "Tokyo", "Cairo"]),
    ("What do bees make?", ["honey", "milk", "silk"]),
    ("What is frozen water called?", ["steam", "ice", "sand"]),
    ("Who wrote Romeo and Juliet?", ["Charles Dickens", "William Shakespeare", "Mark Twain"]),
    ("Is the sky blue? Answer Yes or No.", ["Yes", "No"]),
]
PROMPTS = [
    ("The capital of France is", {"stop": ".", "max_tokens": 16}),
    ("Write three French words with accents: café, thé,", {"stop": "\n", "max_tokens": 16}),
    ("Once upon a time", {"stop": [" was", "\n"], "max_tokens": 16}),
    ("Once upon a time", {"stop": "\n", "max_tokens": 16, "temperature": 0.8, "seed": 3}),
    ("Emoji: 🙂 😀", {"stop": None, "max_tokens": 12, "temperature": 1.0, "seed": 1}),
]


@pytest.fixture(scope="module")
def smol_llama():
    from autocog.lm import LLaMa

    return LLaMa(**LLaMa.create())


def user(text):
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_template_equals_transformers(smol_tf, smol_llama, name):
    messages = CONVERSATIONS[name]
    reference = smol_tf.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert smol_tf.apply_chat_template(messages) == reference
    assert smol_llama.apply_chat_template(messages) == reference
    assert smol_llama.apply_chat_template(
        messages, add_generation_prompt=False
    ) == smol_tf.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert smol_tf.prompt_tokens(messages) == smol_llama.prompt_tokens(messages)


def test_choose_messages_equals_rendered_and_backends_agree(smol_tf, smol_llama):
    picks = {}
    for lm in (smol_tf, smol_llama):
        picks[lm] = []
        for question, choices in CHAT_QUESTIONS:
            messages = user(question)
            index = lm.choose(messages, choices)
            assert index == lm.choose(lm.apply_chat_template(messages), choices)
            picks[lm].append(index)
    assert picks[smol_tf] == picks[smol_llama]
    # the easy facts, as the start of the assistant's reply (the 135M model says "steam" for frozen water)
    assert [picks[smol_tf][k] for k in (0, 1, 2, 4)] == [0, 1, 0, 1]


def test_boundary_space_before_a_choice(smol_tf, smol_llama):
    # The template ends with "<|im_start|>assistant\n": the reply starts a line, so "Yes" (no space) is the
    # natural continuation; " Yes" is a different, much less likely token sequence.
    messages = CONVERSATIONS["no-system"]
    for lm in (smol_tf, smol_llama):
        text = lm.apply_chat_template(messages)
        assert text.endswith("<|im_start|>assistant\n")
        prompt_tokens, tree, _ = lm.build_tree(messages, ["Yes", " Yes"])
        # the "\n" moves into the choices (the boundary rule) but the tokens are those of the whole text
        assert prompt_tokens + tree.path_tokens(tree.paths[0][-1]) == lm.tokenize(text + "Yes", bos=True)
        assert prompt_tokens + tree.path_tokens(tree.paths[1][-1]) == lm.tokenize(text + " Yes", bos=True)
        r = lm.choice_distribution(messages, ["Yes", " Yes", "No", " No"])
        assert r.probs[0] > 100 * r.probs[1] and r.probs[2] > 100 * r.probs[3]


def test_stream_equals_complete_local(smol_tf, smol_llama):
    for lm in (smol_tf, smol_llama):
        for prompt, kwargs in PROMPTS + [(user("Name a French cheese."), {"stop": ".", "max_tokens": 20})]:
            pieces = list(lm.stream(prompt, **kwargs))
            assert "".join(pieces) == lm.complete(prompt, **kwargs), (prompt, kwargs)
            assert not any("\ufffd" in p for p in pieces)


def test_cli_complete_chat_prints_the_reply(smol_llama):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "autocog",
            "complete",
            "--backend",
            "llama",
            "--system",
            "You answer in one word.",
            "What is the capital of France?",
            "--max-tokens",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    messages = [{"role": "system", "content": "You answer in one word."}, *user("What is the capital of France?")]
    expected = smol_llama.complete(messages, max_tokens=8)
    assert out.stdout == (expected if expected.endswith("\n") else expected + "\n")


# ------------------------------------------------------------------------------------------------------
# OpenAI through llama_cpp.server
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol_api(smol_server):
    from autocog.lm import OpenAI

    lm = OpenAI(model="smollm2", base_url=smol_server.base_url)
    yield lm
    lm.close()


def test_openai_stream_equals_complete(smol_api, smol_llama):
    for prompt, kwargs in PROMPTS:
        pieces = list(smol_api.stream(prompt, **kwargs))
        text = smol_api.complete(prompt, **kwargs)
        assert "".join(pieces) == text, (prompt, kwargs)
        assert not any("\ufffd" in p for p in pieces)
        if "seed" not in kwargs:  # greedy: the server and LLaMa agree
            assert text == smol_llama.complete(prompt, **kwargs)


def test_openai_messages(smol_server, smol_api, smol_llama):
    from autocog.lm import OpenAI

    messages = user("What is the capital of France?")
    with pytest.raises(ChatTemplateError, match="chat_template="):  # llama_cpp.server exposes no template
        smol_api.choose(messages, ["Paris", "London"])
    templated = OpenAI(model="smollm2", base_url=smol_server.base_url, chat_template=smol_llama.chat_template)
    chat = OpenAI(model="smollm2", base_url=smol_server.base_url, chat=True)
    try:
        assert templated.apply_chat_template(messages) == smol_llama.apply_chat_template(messages)
        expected = smol_llama.choice_distribution(messages, ["Paris", "London", "Berlin"])
        np.testing.assert_allclose(
            templated.choice_distribution(messages, ["Paris", "London", "Berlin"]).probs, expected.probs, atol=0.02
        )
        assert chat.choose(messages, ["Paris", "London", "Berlin"]) == expected.index
        for lm in (templated, chat):
            kwargs = {"stop": ".", "max_tokens": 20}
            assert "".join(lm.stream(messages, **kwargs)) == lm.complete(messages, **kwargs)
        assert templated.complete(messages, stop=".", max_tokens=20) == smol_llama.complete(
            messages, stop=".", max_tokens=20
        )
        # a program written as turns runs the same on the chat server and locally
        from autocog.fta import Choose, Program, System, User

        prog = Program(
            [
                System("You answer in one word."),
                User("What is the capital of {country}?"),
                Choose("answer", ["Paris", "London", "Berlin"]),
            ]
        )
        answers = [prog.run(lm, country="France").best.values["answer"] for lm in (chat, templated, smol_llama)]
        assert answers == ["Paris"] * 3
    finally:
        templated.close()
        chat.close()
