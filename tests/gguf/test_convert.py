"""HF checkpoint -> GGUF (autocog.gguf.convert), llama.cpp's quantizer (autocog.gguf.quantize), the model comparison
(autocog.eval.compare), perplexity (autocog.gguf.perplexity) and the model card (autocog.gguf.card).

Fast tests use the seeded tiny random models (Llama, Mistral, Qwen2); the SmolLM2 tests are marked slow."""

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

from autocog.errors import ModelNotFoundError
from autocog.gguf.convert import UnsupportedModelError, convert, pre_tokenizer_name, rope_permute

# F32 KV cache: llama.cpp then agrees with transformers to ~1e-5 (see test_llama.py).
EXACT = dict(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
PROBE = "Héllo wörld! 日本語 🤖 naïve café 12345 3.14159 1000000  two  spaces\n\n\ttab\n   x don't I'M (A)"
PROMPTS = [
    ("Question: What is the capital of France?\nAnswer:", [" Paris", " Berlin", " The answer is (A)."]),
    ("The quick brown fox", [" jumps", " 1000", " Yes or no?"]),
    ("name: Alice, phone:", [" 555-0100", " 94110", " no"]),
]


def llama(path, **kw):
    from autocog.lm import LLaMa

    return LLaMa(**LLaMa.create(model_path=path, **{"n_ctx": 512, **EXACT, **kw}))


def max_diff(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def tensors(path):
    reader = gguf.GGUFReader(str(path))
    return {t.name: t for t in reader.tensors}, reader


def field(reader, key):
    f = reader.fields[key]
    value = f.parts[f.data[0]]
    return bytes(value).decode() if f.types[0] == gguf.GGUFValueType.STRING else value[0]


def tiny_variant(tmp_path, kind):
    """A seeded random Mistral or Qwen2 (with q/k/v biases) with the tiny Llama's tokenizer."""
    import torch
    import transformers

    from autocog.gguf.models import tiny_llama

    out = tmp_path / kind
    source = tiny_llama()
    # 8 rows more than the tokenizer has (a padded vocabulary, as Qwen2 checkpoints have; Qwen2Tokenizer adds one)
    common = dict(
        vocab_size=json.loads((source / "config.json").read_text())["vocab_size"] + 8,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=1,
        initializer_range=0.15,
        tie_word_embeddings=kind == "qwen2",
    )
    torch.manual_seed(1)
    if kind == "mistral":
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**common, sliding_window=None))
    else:
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
        with torch.no_grad():  # Qwen2 initializes its biases to 0: make them count
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
    model.to(torch.float32).eval().save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, out / name)
    # transformers picks the tokenizer class by model type (Qwen2Tokenizer brings Qwen2's pre-tokenizer):
    # save what it loads, as a real checkpoint holds it
    transformers.AutoTokenizer.from_pretrained(out).save_pretrained(out)
    return out


# --- conversion: exact round trip, tokenizer, architectures ---------------------------------------------


@pytest.fixture(scope="module")
def tiny_f32(tmp_path_factory):
    from autocog.gguf.models import tiny_llama

    return convert(tiny_llama(), tmp_path_factory.mktemp("tiny") / "tiny-f32.gguf", outtype="f32")


def test_tiny_round_trip_is_exact(tiny_f32):
    from safetensors.numpy import load_file

    from autocog.gguf.models import tiny_llama

    hf = load_file(str(tiny_llama() / "model.safetensors"))
    out, reader = tensors(tiny_f32)
    assert len(out) == 2 + 9 * 2 + 1  # embeddings, output norm, 9 per block, output
    q = hf["model.layers.1.self_attn.q_proj.weight"]
    stored = np.asarray(out["blk.1.attn_q.weight"].data)
    np.testing.assert_array_equal(stored, rope_permute(q, 4))
    # the permutation only reorders rows within each head (interleaving the halves)
    head = q.shape[0] // 4
    np.testing.assert_array_equal(stored[1], q[head // 2])
    np.testing.assert_array_equal(
        np.asarray(out["blk.0.attn_k.weight"].data), rope_permute(hf["model.layers.0.self_attn.k_proj.weight"], 2)
    )
    for gg, name in [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output.weight", "lm_head.weight"),
        ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),
        ("output_norm.weight", "model.norm.weight"),
    ]:
        np.testing.assert_array_equal(np.asarray(out[gg].data), hf[name])
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2"
    assert bool(field(reader, "tokenizer.ggml.add_bos_token"))
    assert int(field(reader, "tokenizer.ggml.bos_token_id")) == 0
    assert int(field(reader, "tokenizer.ggml.eos_token_id")) == 1


def test_tiny_llama_gguf_is_the_converter_output(tiny_f32):
    import autocog.gguf.models
    from autocog.gguf.models import tiny_llama_gguf

    assert autocog.gguf.models.convert is convert  # the name DESIGN.md gives

    a, _ = tensors(tiny_f32)
    b, _ = tensors(tiny_llama_gguf())
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name].data), np.asarray(b[name].data))


def test_tiny_scores_match_transformers(tiny_f32, tiny_tf):
    lm = llama(tiny_f32)
    assert lm.tokenize(PROBE) == tiny_tf.tokenize(PROBE)
    assert lm.tokenize("Yes", bos=True) == tiny_tf.tokenize("Yes", bos=True)
    for prompt, choices in PROMPTS:
        assert max_diff(lm.choice_logprobs(prompt, choices), tiny_tf.choice_logprobs(prompt, choices)) < 1e-4


@pytest.mark.parametrize("kind", ["mistral", "qwen2"])
def test_mistral_and_qwen2_convert(tmp_path, kind):
    from autocog.lm import TfLM

    source = tiny_variant(tmp_path, kind)
    path = convert(source, tmp_path / f"{kind}.gguf", outtype="f32")
    out, reader = tensors(path)
    assert field(reader, "general.architecture") == ("llama" if kind == "mistral" else "qwen2")
    assert ("blk.0.attn_q.bias" in out) == (kind == "qwen2")
    assert ("output.weight" in out) == (kind == "mistral")  # Qwen2 ties its embeddings here
    assert field(reader, "tokenizer.ggml.pre") == ("gpt-2" if kind == "mistral" else "qwen2")
    tf = TfLM(**TfLM.create(model_path=source))
    lm = llama(path)
    assert lm.tokenize(PROBE, bos=True) == tf.tokenize(PROBE, bos=True)
    for prompt, choices in PROMPTS:
        assert max_diff(lm.choice_logprobs(prompt, choices), tf.choice_logprobs(prompt, choices)) < 1e-4


@pytest.fixture(scope="module")
def tiny_spm(tmp_path_factory):
    """A tiny random Llama with a SentencePiece BPE tokenizer (byte fallback), in two forms: ``model`` ships
    tokenizer.model (Llama 2 / Mistral style), ``json`` only the tokenizer.json transformers saves from it."""
    spm = pytest.importorskip("sentencepiece")
    import torch
    import transformers

    from autocog.gguf.models import TINY_CORPUS

    root = tmp_path_factory.mktemp("spm")
    (root / "corpus.txt").write_text("\n".join(TINY_CORPUS * 5))
    spm.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"),
        model_prefix=str(root / "spm"),
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        minloglevel=2,
    )
    dirs = {}
    for kind in ("model", "json"):
        out = dirs[kind] = root / kind
        config = transformers.LlamaConfig(
            vocab_size=400,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            bos_token_id=1,
            eos_token_id=2,
            initializer_range=0.15,
            max_position_embeddings=512,
        )
        torch.manual_seed(2)
        transformers.LlamaForCausalLM(config).eval().save_pretrained(out)
        shutil.copy(root / "spm.model", out / "tokenizer.model")
        (out / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "LlamaTokenizer",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "unk_token": "<unk>",
                    "add_bos_token": True,
                }
            )
        )
        if kind == "json":
            transformers.AutoTokenizer.from_pretrained(out).save_pretrained(out)
            (out / "tokenizer.model").unlink()
    return dirs


@pytest.mark.parametrize("kind", ["model", "json"])
def test_sentencepiece_tokenizer(tmp_path, tiny_spm, kind):
    import transformers

    from autocog.gguf.models import TINY_CORPUS
    from autocog.lm import TfLM

    path = convert(tiny_spm[kind], tmp_path / "spm.gguf", outtype="f32")
    _, reader = tensors(path)
    assert field(reader, "tokenizer.ggml.model") == "llama"
    hf = transformers.AutoTokenizer.from_pretrained(tiny_spm[kind])
    lm = llama(path)
    for text in [PROBE] + TINY_CORPUS:  # raw tokenization: BOS, the SentencePiece space prefix, byte fallback
        assert lm.model.tokenize(text.encode(), add_bos=True, special=False) == hf.encode(text), text
    ids = hf.encode(TINY_CORPUS[2])
    tf = TfLM(**TfLM.create(model_path=tiny_spm[kind]))
    np.testing.assert_allclose(lm.greedy(ids), tf.greedy(ids), atol=1e-4)


def test_outtypes(tmp_path, tiny_f32):
    from autocog.gguf.models import tiny_llama

    reference = llama(tiny_f32).choice_logprobs(*PROMPTS[0])
    expected = {
        "f16": gguf.GGMLQuantizationType.F16,
        "bf16": gguf.GGMLQuantizationType.BF16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }
    drift = {}
    for outtype, qtype in expected.items():
        path = convert(tiny_llama(), tmp_path / f"{outtype}.gguf", outtype=outtype)
        out, _ = tensors(path)
        assert out["blk.0.attn_q.weight"].tensor_type == qtype
        assert out["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32  # 1-D stays F32
        drift[outtype] = max_diff(llama(path).choice_logprobs(*PROMPTS[0]), reference)
    assert drift["f16"] < 0.02 and drift["q8_0"] < 0.2 and drift["bf16"] < 0.2
    assert drift["f16"] < drift["bf16"]  # f16 keeps 3 more mantissa bits than bf16


def test_convert_errors(tmp_path):
    from autocog.gguf.models import tiny_llama

    with pytest.raises(ValueError, match="unknown outtype 'q4'.*f32, f16, bf16, q8_0"):
        convert(tiny_llama(), tmp_path / "x.gguf", outtype="q4")
    with pytest.raises(ModelNotFoundError, match="not found"):
        convert(tmp_path / "nope", tmp_path / "x.gguf")
    bad = tmp_path / "gpt2"
    shutil.copytree(tiny_llama(), bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel.*LlamaForCausalLM.*MistralForCausalLM.*Qwen2"):
        convert(bad, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_pre_tokenizer_names():
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    assert pre_tokenizer_name({"pre_tokenizer": byte_level}) == "gpt-2"
    digits = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    assert pre_tokenizer_name({"pre_tokenizer": digits}) == "smollm"
    from autocog.gguf.convert import SPLIT_PATTERNS

    for pattern, name in SPLIT_PATTERNS.items():
        split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated"}
        seq = {"type": "Sequence", "pretokenizers": [split, {**byte_level, "use_regex": False}]}
        assert pre_tokenizer_name({"pre_tokenizer": seq}) == name
    with pytest.raises(UnsupportedModelError, match="unknown BPE pre-tokenizer"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Whitespace"}})


# --- quantization --------------------------------------------------------------------------------------


def test_quantize_types_are_llama_cpp_constants():
    from autocog.gguf.quantize import quantize_types

    types = quantize_types()
    constants = [n for n in dir(llama_cpp) if n.startswith("LLAMA_FTYPE_") and n != "LLAMA_FTYPE_GUESSED"]
    assert len(types) == len(constants)
    assert types["Q4_K_M"] == llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M and types["F32"] == llama_cpp.LLAMA_FTYPE_ALL_F32


def test_quantize_tiny(tmp_path, tiny_f32):
    from autocog.gguf.quantize import quantize

    calls = []
    out = quantize(tiny_f32, tmp_path / "q4km.gguf", "q4_k_m", progress=lambda *a: calls.append(a))
    n = len(tensors(tiny_f32)[0])
    assert calls and calls[-1][:2] == (n, n) and [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert out.stat().st_size < tiny_f32.stat().st_size / 3
    lm = llama(out)
    reference = llama(tiny_f32).choice_logprobs(*PROMPTS[0])
    assert 0 < max_diff(lm.choice_logprobs(*PROMPTS[0]), reference) < 2.0


def test_q8_0_conversion_is_llama_cpps_q8_0(tmp_path, tiny_f32):
    """convert(outtype="q8_0") (gguf's numpy quants) writes the same bytes as llama.cpp's quantizer."""
    from autocog.gguf.models import tiny_llama
    from autocog.gguf.quantize import quantize

    ours, _ = tensors(convert(tiny_llama(), tmp_path / "ours.gguf", outtype="q8_0"))
    theirs, _ = tensors(quantize(tiny_f32, tmp_path / "theirs.gguf", "Q8_0"))
    assert ours.keys() == theirs.keys()
    for name, t in ours.items():
        assert t.tensor_type == theirs[name].tensor_type, name
        np.testing.assert_array_equal(np.asarray(t.data), np.asarray(theirs[name].data))
    assert ours["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0


def test_quantize_errors(tmp_path, tiny_f32):
    from autocog.gguf.quantize import quantize

    with pytest.raises(ValueError, match="unknown quantization type 'Q9'.*Q8_0.*Q4_K_M"):
        quantize(tiny_f32, tmp_path / "x.gguf", "Q9")
    with pytest.raises(ModelNotFoundError, match="not found"):
        quantize(tmp_path / "missing.gguf", tmp_path / "x.gguf", "Q8_0")
    with pytest.raises(ValueError, match="is the input"):
        quantize(tiny_f32, tiny_f32, "Q8_0")
    assert not (tmp_path / "x.gguf").exists()


# --- comparison ----------------------------------------------------------------------------------------


def test_parse_model_spec(tmp_path):
    from autocog.eval.compare import parse_model_spec

    spec = parse_model_spec("llama:a/b.gguf")
    assert (spec.backend, spec.path, spec.label) == ("llama", "a/b.gguf", "b.gguf (llama)")
    assert parse_model_spec("x.gguf").backend == "llama"
    assert parse_model_spec(str(tmp_path)).backend == "tf"
    assert parse_model_spec("tf:x.gguf").backend == "tf"
    assert parse_model_spec("gpt-4o", default_backend="openai").backend == "openai"


def test_comparison_equals_hand_computation(tmp_path, tiny_f32, tiny_tf):
    from autocog.eval.batch import choice_distributions
    from autocog.eval.compare import compare
    from autocog.eval.evaluate import load_items, wilson_interval
    from autocog.gguf.quantize import quantize

    q8 = quantize(tiny_f32, tmp_path / "q8.gguf", "Q8_0")
    lms = [tiny_tf, llama(tiny_f32), llama(q8)]
    table = compare(lms, limit=12, labels=["hf", "f32", "q8"])
    items = load_items(limit=12)
    prompts, choices = [it.prompt for it in items], [it.choices for it in items]
    answers = np.array([it.answer for it in items])
    by_hand = [choice_distributions(lm, prompts, choices) for lm in lms]
    totals = [[np.array([sum(t) for t in r.token_logprobs]) for r in results] for results in by_hand]
    for m, row in enumerate(table.rows):
        predicted = np.array([r.index for r in by_hand[m]])
        correct = int((predicted == answers).sum())
        assert row.accuracy["sum"]["correct"] == correct
        assert row.accuracy["sum"]["interval"] == wilson_interval(correct, 12)
        mean_len = [np.array([sum(t) / len(t) for t in r.token_logprobs]) for r in by_hand[m]]
        assert row.accuracy["mean"]["correct"] == sum(int(np.argmax(s)) == a for s, a in zip(mean_len, answers))
        delta = np.mean([abs(x - y) for a, b in zip(totals[m], totals[0]) for x, y in zip(a, b)])
        assert row.mean_abs_delta_logprob == pytest.approx(delta, abs=1e-12)
        kl = np.mean(
            [sum(p * math.log(p / q) for p, q in zip(r0.probs, r.probs)) for r0, r in zip(by_hand[0], by_hand[m])]
        )
        assert row.kl == pytest.approx(max(kl, 0), abs=1e-9)
        assert row.agreement == np.mean([r0.index == r.index for r0, r in zip(by_hand[0], by_hand[m])])
    assert table.rows[0].kl == 0 and table.rows[0].mean_abs_delta_logprob == 0
    assert table["f32"].mean_abs_delta_logprob < 1e-3 < table["q8"].mean_abs_delta_logprob
    assert table["q8"].size_bytes == q8.stat().st_size
    text, markdown = table.format(), table.to_markdown()
    assert all(label in text and f"| {label} |" in markdown for label in ("hf", "f32", "q8"))
    plot = table.plot(tmp_path / "cmp.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = type(table).from_dict(json.loads(json.dumps(table.to_dict())))
    assert again.to_markdown() == markdown


# --- perplexity ----------------------------------------------------------------------------------------


def test_perplexity_matches_a_full_forward_pass(tiny_f32, tiny_tf):
    import torch

    from autocog.gguf.models import TINY_CORPUS
    from autocog.gguf.perplexity import perplexity

    text = " ".join(TINY_CORPUS * 3)
    result = perplexity(tiny_tf, text, context=32)
    tokens = tiny_tf.tokenize(text)
    assert result.windows == len(tokens) // 32 and result.tokens_scored == result.windows * 15
    nll = []
    for w in range(result.windows):  # by hand: BOS in front, the second half scored
        window = [tiny_tf.bos_token_id] + tokens[w * 32 + 1 : (w + 1) * 32]
        with torch.no_grad():
            logprobs = torch.log_softmax(tiny_tf.model(torch.tensor([window])).logits[0].double(), -1)
        nll += [-float(logprobs[j, window[j + 1]]) for j in range(16, 31)]
    assert result.nll == pytest.approx(np.mean(nll), abs=1e-5)
    assert result.perplexity == pytest.approx(math.exp(np.mean(nll)), rel=1e-5)
    assert perplexity(llama(tiny_f32), text, context=32).perplexity == pytest.approx(result.perplexity, rel=1e-4)
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity(tiny_tf, "short text", context=32)


# --- model card ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_comparison():
    from autocog.eval.compare import Comparison, ModelRow

    def row(label, acc, delta, kl, path):
        accuracy = {
            n: {"accuracy": acc, "correct": int(acc * 32), "n": 32, "interval": (acc - 0.1, acc + 0.05)}
            for n in ("sum", "mean", "char")
        }
        return ModelRow(label, accuracy, delta, kl, 1.0, 1000, 1.0, 2.0, "llama", path)

    return Comparison(
        [row("f16", 0.875, 0.0, 0.0, "m-f16.gguf"), row("q4", 0.8125, 0.2, 0.01, "m-q4.gguf")],
        ["sum", "mean", "char"],
        "easy_mc.jsonl",
        32,
    )


def test_card_parses_back_and_validates(tmp_path, small_comparison):
    from huggingface_hub import ModelCard

    from autocog.gguf.card import validate_card, write_card

    plot = small_comparison.plot(tmp_path / "elsewhere.png")
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "m-q4.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    path = write_card(folder, small_comparison.to_dict(), "HuggingFaceTB/SmolLM2-135M-Instruct", plot=plot)
    assert (folder / "elsewhere.png").is_file()
    card = ModelCard.load(path)
    data = card.data
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and data.license == "apache-2.0"
    assert data.quantized_by == "autocog" and "gguf" in data.tags
    assert data.model_name == "SmolLM2-135M-Instruct-GGUF"
    results = {(r.metric_config, r.metric_type): r.metric_value for r in data.eval_results}
    assert results[("m-q4.gguf/char", "accuracy")] == 0.8125 and len(results) == 6
    assert "| q4 |" in card.text and "![comparison](elsewhere.png)" in card.text and "`m-q4.gguf`" in card.text
    validate_card(card)
    with pytest.raises(ValueError, match="license 'nope'"):
        validate_card(str(card).replace("license: apache-2.0", "license: nope"))
    with pytest.raises(ValueError, match="base_model"):
        write_card(folder, small_comparison, "not an id")


def test_push_fails_clearly_without_token_or_network(tmp_path, monkeypatch, small_comparison):
    import huggingface_hub

    from autocog.gguf.card import PushError, push, write_card

    write_card(tmp_path, small_comparison, "owner/base")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no saved login
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PushError, match="no Hugging Face token"):
        push(tmp_path, "me/repo")
    with pytest.raises(PushError, match="HF_HUB_OFFLINE"):
        push(tmp_path, "me/repo", token="hf_not_a_real_token")
    with pytest.raises(ValueError, match="owner/name"):
        push(tmp_path, "no-slash", token="hf_x")


# --- command line --------------------------------------------------------------------------------------


def test_cli_convert_quantize_eval_card(tmp_path, capsys):
    from autocog.cli.app import main
    from autocog.gguf.models import tiny_llama

    src = str(tiny_llama())
    assert main(["convert", src, str(tmp_path / "t-f32.gguf"), "--outtype", "f32"]) == 0
    assert main(["quantize", str(tmp_path / "t-f32.gguf"), str(tmp_path / "t-q8.gguf"), "--type", "Q8_0"]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--model",
                src,
                "--model",
                str(tmp_path / "t-f32.gguf"),
                "--model",
                f"llama:{tmp_path / 't-q8.gguf'}",
                "--limit",
                "6",
                "--f32-cache",
                "--plot",
                str(tmp_path / "c.png"),
                "--json",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "t-f32.gguf (llama)" in out and "t-q8.gguf (llama)" in out and "KL" in out
    data = json.loads((tmp_path / "c.json").read_text())
    assert [m["backend"] for m in data["models"]] == ["tf", "llama", "llama"]
    assert data["models"][1]["mean_abs_delta_logprob"] < 1e-3  # --f32-cache: F32 weights, F32 KV cache
    assert (
        main(
            [
                "card",
                str(tmp_path),
                "--results",
                str(tmp_path / "c.json"),
                "--plot",
                str(tmp_path / "c.png"),
                "--base-model",
                "autocog/tiny-llama",
            ]
        )
        == 0
    )
    assert (tmp_path / "README.md").read_text().startswith("---\nbase_model: autocog/tiny-llama")
    assert main(["quantize", str(tmp_path / "t-f32.gguf"), str(tmp_path / "x.gguf"), "--type", "Q9"]) == 2
    assert main(["quantize", str(tmp_path / "nope.gguf"), str(tmp_path / "x.gguf")]) == 1
    assert main(["convert", str(tmp_path), str(tmp_path / "x.gguf")]) == 1  # no config.json
    err = capsys.readouterr().err
    assert "unknown quantization type 'Q9'" in err and "nope.gguf" in err and "config.json" in err
    text = tmp_path / "text.txt"
    text.write_text(" ".join(__import__("autocog.gguf.models", fromlist=["TINY_CORPUS"]).TINY_CORPUS * 3))
    assert (
        main(
            [
                "perplexity",
                str(text),
                "--model",
                src,
                "--model",
                str(tmp_path / "t-f32.gguf"),
                "--ctx",
                "32",
                "--json",
                "-",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["perplexity"] == pytest.approx(rows[1]["perplexity"], rel=1e-4)


def test_cli_push_without_token_fails_fast(tmp_path, small_comparison):
    (tmp_path / "c.json").write_text(json.dumps(small_comparison.to_dict()))
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "home")}
    env.pop("HF_TOKEN", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "autocog",
            "card",
            str(tmp_path),
            "--results",
            str(tmp_path / "c.json"),
            "--base-model",
            "o/b",
            "--push",
            "me/repo",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 1 and "no Hugging Face token" in out.stderr
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "autocog",
            "card",
            str(tmp_path),
            "--results",
            str(tmp_path / "c.json"),
            "--base-model",
            "o/b",
            "--push",
            "me/repo",
            "--token",
            "hf_x",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 1 and "HF_HUB_OFFLINE" in out.stderr


# --- SmolLM2 (slow) ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_f32(tmp_path_factory):
    from autocog.lm.assets import smollm2_transformers

    return convert(smollm2_transformers(), tmp_path_factory.mktemp("smol") / "smollm2-f32.gguf", outtype="f32")


@pytest.mark.slow
def test_smollm2_f32_matches_transformers(smol_f32, smol_tf):
    from conftest import EASY_FACTS

    lm = llama(smol_f32, n_ctx=1024)
    assert lm.tokenize(PROBE) == smol_tf.tokenize(PROBE)
    assert lm.tokenize(PROBE, bos=True) == smol_tf.tokenize(PROBE, bos=True)
    for prompt, choices, _ in EASY_FACTS:
        assert max_diff(lm.choice_logprobs(prompt, choices), smol_tf.choice_logprobs(prompt, choices)) < 1e-3
    template = lm.model.metadata["tokenizer.chat_template"]
    assert template == smol_tf.tokenizer.chat_template
    _, reader = tensors(smol_f32)
    assert field(reader, "tokenizer.ggml.add_bos_token") == False  # noqa: E712 - numpy bool
    assert "output.weight" not in tensors(smol_f32)[0]  # tied embeddings


# Stated drift bounds of Q8_0 against F32 on the bundled 32 questions (measured: KL 0.0008, |Δ logp| 0.146,
# agreement 1.0, acc_norm 27 vs 28 of 32; see docs/gguf.md).
Q8_MAX_KL, Q8_MAX_DELTA, Q8_MIN_AGREE = 0.005, 0.3, 0.9


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 3 models x 32 questions: ~12 min on a busy 2-core machine
def test_smollm2_q8_0_drift_and_q4_k_m(tmp_path, smol_f32):
    from autocog.eval.compare import compare
    from autocog.gguf.quantize import QuantizationError, quantize

    q8 = quantize(smol_f32, tmp_path / "q8_0.gguf", "Q8_0")
    q4 = quantize(smol_f32, tmp_path / "q4_k_m.gguf", "Q4_K_M")
    table = compare(
        [llama(smol_f32, n_ctx=1024), llama(q8, n_ctx=1024), llama(q4, n_ctx=1024)], labels=["f32", "q8_0", "q4_k_m"]
    )
    f32, q8_row, q4_row = table.rows
    assert q8_row.kl < Q8_MAX_KL and q8_row.mean_abs_delta_logprob < Q8_MAX_DELTA
    assert q8_row.agreement >= Q8_MIN_AGREE
    assert abs(q8_row.accuracy["char"]["correct"] - f32.accuracy["char"]["correct"]) <= 2
    assert q4_row.accuracy["char"]["accuracy"] > 0.5  # loads and evaluates well above chance (0.25-0.33)
    assert q4_row.kl > q8_row.kl and q4_row.size_bytes < q8_row.size_bytes < f32.size_bytes
    # IQ2_XXS on 1536-wide rows (ffn_down) needs an importance matrix: llama.cpp refuses, we say why
    with pytest.raises(QuantizationError, match="importance matrix"):
        quantize(smol_f32, tmp_path / "iq2.gguf", "IQ2_XXS")
    assert not (tmp_path / "iq2.gguf").exists()


@pytest.mark.slow
def test_smollm2_perplexity_same_on_both_backends(smol_f32, smol_tf):
    from autocog.eval.evaluate import EXAMPLE_DATASET
    from autocog.gguf.perplexity import perplexity

    text = "\n".join(json.loads(line)["question"] for line in EXAMPLE_DATASET.read_text().splitlines() if line)
    a = perplexity(smol_tf, text, context=128)
    b = perplexity(llama(smol_f32, n_ctx=1024), text, context=128)
    assert a.windows >= 2 and a.tokens_scored == b.tokens_scored
    assert b.perplexity == pytest.approx(a.perplexity, rel=1e-3)
