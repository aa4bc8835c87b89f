"""Bad input gets the same typed errors on every local backend (TfLM and LLaMa on the tiny model)."""

import pytest

from autocog.lm import ContextLengthError, InvalidChoicesError, InvalidPromptError


@pytest.fixture(scope="module", params=["tf", "llama"])
def lm(request):
    if request.param == "tf":
        return request.getfixturevalue("tiny_tf")
    from autocog.lm import LLaMa
    from autocog.models import tiny_llama_gguf

    return LLaMa(**LLaMa.create(tiny_llama_gguf(), n_ctx=1024))


@pytest.mark.parametrize("choices, message", [
    ([], "empty"),
    ([" a", " a"], "duplicates"),
    ([" a", ""], "empty string"),
    ([" a", 3], "not a str"),
    (" a", "list of strings"),
])
def test_bad_choices(lm, choices, message):
    with pytest.raises(InvalidChoicesError, match=message):
        lm.choose("prompt", choices)


def test_bad_prompt_and_context(lm):
    with pytest.raises(InvalidPromptError):
        lm.choose(None, [" a", " b"])
    with pytest.raises(InvalidPromptError):
        lm.complete(42)
    long_prompt = "the quick brown fox " * 800
    n = len(lm.tokenize(long_prompt, bos=True))
    with pytest.raises(ContextLengthError, match=f"{n} tokens.*1024 tokens"):
        lm.greedy(long_prompt)
    with pytest.raises(ContextLengthError, match="1024"):
        lm.choose(long_prompt, [" a", " b"])
    with pytest.raises(ValueError, match="normalization"):
        lm.choose("x", [" a", " b"], normalization="max")
    with pytest.raises(TypeError, match="unknown completion setting"):
        lm.complete("x", max_lenght=3)
    assert lm.choose("x", [" a", " b"]) in (0, 1)  # still usable afterwards
