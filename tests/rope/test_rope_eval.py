"""perplexity_by_position and passkey_retrieval: exact against plain full-logits computations on a
tiny Llama, prompt construction, the scorer, memory errors, the CLI's errors, and a short smoke
test on the real SmolLM2."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import corpus_text, make_tiny_llama

from contextwindow.errors import ConfigError, ResourceError
from contextwindow.evaluate.chunked import check_memory, estimate_memory
from contextwindow.evaluate.passkey import (
    FILLER,
    INTRO,
    KEY_SENTENCE,
    QUESTION,
    _answer_done,
    passkey_keys,
    passkey_prompt,
    passkey_retrieval,
    score_passkey,
)
from contextwindow.evaluate.positions import perplexity_by_position
from contextwindow.rope import scale_rope


class CharTokenizer:
    """One token per ASCII character (the tiny Llama has a 128-token vocabulary)."""

    eos_token_id = 127

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) if ord(c) < 127 else 63 for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == self.eos_token_id))


TOK = CharTokenizer()
TEXT = "".join(
    chr(c)
    for c in torch.randint(32, 127, (2000,), generator=torch.Generator().manual_seed(3)).tolist()
)


def reference_bucket_nll(model, ids, bucket):
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0].double()
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")
    means, counts = [], []
    for b0 in range(0, len(ids), bucket):
        values = nll[max(b0, 1) - 1 : min(b0 + bucket, len(ids)) - 1]
        means.append(float(values.mean()))
        counts.append(values.numel())
    return means, counts, float(nll.mean())


# --------------------------------------------------------------------------------------------
# perplexity by position
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["none", "yarn", "dynamic"])
def test_perplexity_by_position_equals_full_logits(method):
    model = make_tiny_llama()
    if method != "none":
        scale_rope(model, method, 2.0)
    # 300 tokens (past the trained 256), buckets of 64, logits chunks of 50 that straddle buckets
    result = perplexity_by_position(model, TOK, TEXT, 300, 64, chunk=50)
    if method == "dynamic":
        scale_rope(model, "dynamic", 2.0)  # fresh state for the reference's own single forward
    means, counts, overall = reference_bucket_nll(model, TOK(TEXT)["input_ids"][:300], 64)
    assert result.starts == (0, 64, 128, 192, 256)
    assert result.tokens == (63, 64, 64, 64, 44) == tuple(counts)
    assert result.nll == pytest.approx(means, rel=1e-5)
    assert result.ppl == pytest.approx([math.exp(m) for m in means], rel=1e-5)
    assert result.overall_ppl == pytest.approx(math.exp(overall), rel=1e-5)
    assert result.as_dict()["ppl"] == list(result.ppl)


def test_perplexity_progress_and_argument_errors():
    model = make_tiny_llama()
    calls = []
    perplexity_by_position(
        model, TOK, TEXT, 130, 100, chunk=40, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(40, 129), (80, 129), (120, 129), (129, 129)]
    with pytest.raises(ConfigError, match="the text has only 5 tokens; 10 are needed"):
        perplexity_by_position(model, TOK, "hello", 10, 4)
    with pytest.raises(ConfigError, match="length must be"):
        perplexity_by_position(model, TOK, TEXT, 1, 4)
    with pytest.raises(ConfigError, match="bucket must be"):
        perplexity_by_position(model, TOK, TEXT, 100, 0)


def test_memory_estimate_and_resource_error():
    model = make_tiny_llama()
    with pytest.raises(ResourceError) as info:
        perplexity_by_position(model, TOK, TEXT, 300, 64, max_memory=10_000)
    need = estimate_memory(model, 300)
    message = str(info.value)
    assert (
        f"needs about {need / 2**30:.2f} GiB" in message and "only 0.00 GiB is available" in message
    )
    with pytest.raises(ResourceError, match="evaluating 300 tokens needs about"):
        passkey_retrieval(model, TOK, 300, 0.5, 1, max_memory=10_000, max_new_tokens=0)
    assert check_memory(model, 300, max_memory=10**12) == need
    # linear in length with SDPA (KV cache, activations), quadratic when attention is materialised
    sdpa = [estimate_memory(model, n) for n in (50_000, 100_000)]
    model.config._attn_implementation = "eager"
    eager = [estimate_memory(model, n) for n in (50_000, 100_000)]
    assert 1.9 < sdpa[1] / sdpa[0] < 2.1
    assert 3.5 < eager[1] / eager[0] < 4.1 and eager[0] > sdpa[0]


# --------------------------------------------------------------------------------------------
# passkey prompt and scorer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.37, 0.5, 1.0])
def test_passkey_prompt_puts_the_key_at_the_depth(depth):
    p = passkey_prompt(TOK, 1000, depth, "48213")
    ids = list(p.input_ids)
    sentence = KEY_SENTENCE.format(key="48213")
    assert len(ids) == 1000
    n_filler = 1000 - len(INTRO) - len(sentence) - len(QUESTION)
    assert p.filler_tokens == n_filler
    assert p.filler_before == round(depth * n_filler)
    assert p.key_start == len(INTRO) + p.filler_before and p.key_end == p.key_start + len(sentence)
    assert abs(p.actual_depth - depth) <= 0.5 / n_filler + 1e-12  # to half a token
    text = TOK.decode(ids)
    assert text.startswith(INTRO)
    assert TOK.decode(ids[p.key_start : p.key_end]) == sentence
    assert text.endswith(QUESTION)
    filler = (FILLER * 100)[:n_filler]
    assert TOK.decode(ids[len(INTRO) : p.key_start]) == filler[: p.filler_before]
    assert TOK.decode(ids[p.key_end : -len(QUESTION)]) == filler[p.filler_before :]
    assert text.count("48213") == 2


def test_passkey_prompt_errors():
    with pytest.raises(ConfigError, match="depth must be between 0 and 1"):
        passkey_prompt(TOK, 1000, 1.5, "12345")
    with pytest.raises(ConfigError, match="needs at least"):
        passkey_prompt(TOK, 100, 0.5, "12345")
    with pytest.raises(ConfigError, match="must be digits"):
        passkey_prompt(TOK, 1000, 0.5, "12a45")


@pytest.mark.parametrize(
    "answer,ok",
    [
        (" 12345.", True),
        ("12345", True),
        (" 1 2 3 4 5.", True),  # one digit per token, decoded with spaces
        (" 12345 is the pass key", True),
        (" The pass key is 12345.", True),
        (" 123456.", False),
        (" 1234.", False),
        (" 54321 12345", False),  # only the first number counts
        (" 12,345", False),
        ("", False),
        (" twelve thousand", False),
    ],
)
def test_score_passkey_is_exact(answer, ok):
    assert score_passkey(answer, "12345") is ok


def test_answer_done_and_keys():
    assert not _answer_done(" 123") and not _answer_done(" 12345 ") and _answer_done(" 12345.")
    assert not _answer_done(" The")
    keys = passkey_keys(20, seed=7)
    assert keys == passkey_keys(20, seed=7) != passkey_keys(20, seed=8)
    assert all(len(k) == 5 and k.isdigit() and k[0] != "0" for k in keys)


# --------------------------------------------------------------------------------------------
# passkey retrieval == a plain greedy decode of the whole prompt
# --------------------------------------------------------------------------------------------


def reference_answers(model, length, depth, trials, seed, max_new_tokens, cached):
    """Greedy decode of the full prompt; ``cached`` = one prefill + cached steps (generate)."""
    import inspect

    from transformers import DynamicCache

    key_name = (
        "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    )
    answers = []
    for key in passkey_keys(trials, seed):
        ids = list(passkey_prompt(TOK, length, depth, key).input_ids)
        out, cache = [], DynamicCache(config=model.config)
        with torch.inference_mode():
            logits = model(
                torch.tensor([ids]), use_cache=cached, **{key_name: cache if cached else None}
            ).logits
            for _ in range(max_new_tokens):
                token = int(logits[0, -1].argmax())
                out.append(token)
                if token == TOK.eos_token_id or _answer_done(TOK.decode(out)):
                    break
                if cached:
                    logits = model(
                        torch.tensor([[token]]), use_cache=True, **{key_name: cache}
                    ).logits
                else:
                    logits = model(torch.tensor([ids + out])).logits
        answers.append(TOK.decode(out))
    return answers


@pytest.mark.parametrize("method", ["none", "yarn", "dynamic"])
def test_passkey_retrieval_equals_plain_greedy_decoding(method):
    model = make_tiny_llama()
    if method != "none":
        scale_rope(model, method, 2.0)
    # 330 tokens: past the trained 256; the 3 trials share the prefix before the key
    result = passkey_retrieval(model, TOK, 330, 0.4, 3, seed=5, max_new_tokens=6, prefill_chunk=64)
    if method == "dynamic":
        scale_rope(model, "dynamic", 2.0)  # fresh state: generate-style reference
    expected = reference_answers(model, 330, 0.4, 3, 5, 6, cached=method == "dynamic")
    assert list(result.answers) == expected
    assert result.keys == tuple(passkey_keys(3, 5))
    assert result.correct == sum(score_passkey(a, k) for a, k in zip(result.answers, result.keys))
    assert result.accuracy == result.correct / 3
    assert result.as_dict()["answers"] == expected


def test_passkey_argument_errors():
    model = make_tiny_llama()
    with pytest.raises(ConfigError, match="trials must be"):
        passkey_retrieval(model, TOK, 300, 0.5, 0)
    with pytest.raises(ConfigError, match="depth must be"):
        passkey_retrieval(model, TOK, 300, -0.1, 1)


# --------------------------------------------------------------------------------------------
# CLI errors (before any model is loaded)
# --------------------------------------------------------------------------------------------


def test_cli_errors(tmp_path, capsys):
    from contextwindow.cli import main

    text = tmp_path / "t.txt"
    text.write_text("hello")
    assert main(["rope", "--text", str(text), "--methods", "none,bogus"]) == 2
    err = capsys.readouterr().err
    assert "unknown RoPE scaling method 'bogus'" in err and "longrope" in err
    assert main(["rope", "--text", str(text), "--factor", "1"]) == 2
    assert "must be > 1" in capsys.readouterr().err
    assert main(["passkey", "--lengths", "4096,x"]) == 2
    assert "--lengths must be comma-separated integers" in capsys.readouterr().err
    assert main(["passkey", "--trials", "0"]) == 2


# --------------------------------------------------------------------------------------------
# the real model
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_smoke(smollm2):
    model, tokenizer = smollm2
    text = corpus_text("austen_emma.txt")
    result = perplexity_by_position(model, tokenizer, text, 768, 384, chunk=256)
    ids = tokenizer(text[:20000], add_special_tokens=False)["input_ids"][:768]
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0]
    nll = torch.nn.functional.cross_entropy(
        logits[:-1], torch.tensor(ids[1:]), reduction="none"
    ).double()
    assert result.tokens == (383, 384)
    assert result.nll == pytest.approx([float(nll[:383].mean()), float(nll[383:].mean())], rel=1e-4)
    assert 5 < result.overall_ppl < 100  # coherent English for a 135M model

    yarn = scale_rope(model, "yarn", 2.0)
    try:
        assert yarn == {
            "rope_type": "yarn",
            "factor": 2.0,
            "original_max_position_embeddings": 8192,
            "rope_theta": 100000.0,
        }
        scaled = perplexity_by_position(model, tokenizer, text, 768, 384, chunk=256)
    finally:
        assert scale_rope(model, "none") == {"rope_theta": 100000.0, "rope_type": "default"}
    assert scaled.ppl != result.ppl  # the scaling reached the real model's attention

    # within the trained context the unscaled model retrieves the key, and the scorer takes it
    passkey = passkey_retrieval(model, tokenizer, 768, 0.5, 2, seed=0)
    assert passkey.keys == tuple(passkey_keys(2, 0))
    assert list(passkey.answers) == [f" {k}." for k in passkey.keys] and passkey.correct == 2


@pytest.mark.slow
def test_smollm2_cli_rope_and_passkey(smollm2, tmp_path, capsys):
    """Both commands end to end on the real model: JSON equal to the library, plots written."""
    import json

    from contextwindow.cli import main

    model, tokenizer = smollm2
    text = tmp_path / "emma.txt"
    text.write_text(corpus_text("austen_emma.txt")[:20000], encoding="utf-8")
    rope_json, rope_png = tmp_path / "rope.json", tmp_path / "rope.png"
    argv = ["rope", "--text", str(text), "--lengths", "512", "--bucket", "256",
            "--methods", "none,yarn", "--json-out", str(rope_json), "--plot", str(rope_png)]
    assert main(argv) == 0
    out = json.loads(rope_json.read_text())
    assert out["trained"] == 8192 and set(out["results"]) == {"none", "yarn"}
    expected = perplexity_by_position(model, tokenizer, text.read_text(), 512, 256)
    assert out["results"]["none"]["512"]["ppl"] == pytest.approx(expected.ppl, rel=1e-4)
    assert out["results"]["yarn"]["512"]["ppl"] != out["results"]["none"]["512"]["ppl"]
    printed = capsys.readouterr().out
    assert "256-512" in printed and f"{expected.ppl[1]:.1f}" in printed  # the bucket table
    assert rope_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    pk_json, pk_png = tmp_path / "pk.json", tmp_path / "pk.png"
    argv = ["passkey", "--lengths", "512", "--methods", "none", "--trials", "2",
            "--json", str(pk_json), "--plot", str(pk_png)]  # --json PATH: the old --json-out
    assert main(argv) == 0
    cell = json.loads(pk_json.read_text())["results"]["none"]["512"]
    assert cell["keys"] == passkey_keys(2, 0) and cell["correct"] == 2
    assert "100%" in capsys.readouterr().out
    assert pk_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
