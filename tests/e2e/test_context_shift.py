"""llama.cpp's context shift, as ``benchmarks/bench_context_shift.py`` runs it against the sink
cache: the runner (``benchmarks/llamacpp_context_shift.py``, in llama.cpp's venv) really shifts
inside llama.cpp, and with room for the whole text it is exactly a plain evaluation.

400 tokens of *Emma* (399 fed), 32 per ``llama_decode``, n_ctx 256, n_keep 4. Worked by hand from
llama.cpp's rule (shift when ``n_past + batch >= n_ctx``; ``n_discard = (n_past - n_keep) // 2``):
seven batches fill 224 cells; the batch at 224 would fill 256, so 110 cells go (positions 4..113)
and 114 remain at positions 0..113; four more batches reach 242; the batch at 352 shifts again,
119 go, 123 remain (0..122); the last two batches (32 + 15) end at 170 cells, positions 0..169.
"""

from __future__ import annotations

import json
import math
import subprocess
from typing import Any

import pytest
from conftest import corpus_text
from llamacpp import GGUF, llama_python
from test_gateway_fake import ROOT

pytestmark = pytest.mark.slow
RUNNER = ROOT / "benchmarks" / "llamacpp_context_shift.py"
TOKENS, BATCH, N_CTX = 400, 32, 256
SHIFTS = [{"at": 224, "n_past": 224, "n_discard": 110, "pos_min": 0, "pos_max": 113},
          {"at": 352, "n_past": 242, "n_discard": 119, "pos_min": 0, "pos_max": 122}]
FIRST = SHIFTS[0]["at"]  # NLLs scored before the first shift


def run(ids: list[int], *, check: bool = True, **job: Any) -> Any:
    done = subprocess.run([llama_python(), str(RUNNER)], text=True, capture_output=True,
                          check=False, input=json.dumps({"model": str(GGUF), "tokens": ids,
                                                         "batch": BATCH, **job}))
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)
    return done


@pytest.fixture(scope="module")
def ids() -> list[int]:
    from transformers import AutoTokenizer

    from contextwindow.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve())
    return list(tokenizer(corpus_text()[:4000])["input_ids"][:TOKENS])


@pytest.fixture(scope="module")
def plain(ids: list[int]) -> Any:
    return run(ids, n_ctx=512, shift=False)


@pytest.fixture(scope="module")
def shifted(ids: list[int]) -> Any:
    return run(ids, n_ctx=N_CTX, n_keep=4, shift=True)


def test_with_room_for_the_text_the_shift_mode_is_a_plain_evaluation(
    ids: list[int], plain: Any
) -> None:
    roomy = run(ids, n_ctx=512, n_keep=4, shift=True)
    assert roomy["shifts"] == [] and plain["shifts"] == []
    assert roomy["nll"] == plain["nll"]  # bit for bit
    assert plain["positions"] == list(range(1, TOKENS))
    assert plain["final_positions"] == [0, TOKENS - 2]


def test_the_shift_happens_inside_llama_cpp(shifted: Any) -> None:
    # pos_min / pos_max are llama.cpp's own answers after seq_rm + seq_add
    assert shifted["shifts"] == SHIFTS
    assert shifted["final_positions"] == [0, 169]
    assert shifted["max_cells"] == 242  # never more than n_ctx - 1: main's ">=" leaves a cell
    assert shifted["positions"] == list(range(1, TOKENS))


def test_the_shift_changes_what_later_tokens_see(plain: Any, shifted: Any) -> None:
    assert shifted["nll"][:FIRST] == plain["nll"][:FIRST]
    after = list(zip(shifted["nll"][FIRST:], plain["nll"][FIRST:]))
    assert all(a != b for a, b in after)
    ratio = math.exp(sum(a - b for a, b in after) / len(after))
    assert 0.8 < ratio < 1.25, ratio  # a different context, not a broken one


def test_n_keep_is_honoured(ids: list[int], shifted: Any) -> None:
    zero = run(ids, n_ctx=N_CTX, n_keep=0, shift=True)
    # (224 - 0) // 2 = 112 go, 112 remain; four batches reach 240; (240 - 0) // 2 = 120 go
    assert [(s["n_discard"], s["pos_max"]) for s in zero["shifts"]] == [(112, 111), (120, 119)]
    assert zero["nll"][:FIRST] == shifted["nll"][:FIRST]
    assert zero["nll"][FIRST:] != shifted["nll"][FIRST:]


def test_what_the_runner_refuses(ids: list[int]) -> None:
    padded = run(ids, n_ctx=300, shift=True, check=False)
    assert padded.returncode != 0 and "multiple of 256" in padded.stderr
    too_long = run(ids, n_ctx=256, shift=False, check=False)
    assert too_long.returncode != 0 and "do not fit in n_ctx=256" in too_long.stderr


def test_llama_cpp_scores_close_to_transformers(ids: list[int], plain: Any,
                                                smollm2: tuple[Any, Any]) -> None:
    """The same GGUF in both engines: llama.cpp's quantised matmuls and f16 KV cache against the
    weights dequantised to fp32 (the bench measures 0.34% in perplexity on 8,192 tokens)."""
    from contextwindow.evaluate.streaming import streaming_perplexity

    model, _ = smollm2
    ours = streaming_perplexity(model, None, ids, chunk=BATCH)
    assert ours.positions == plain["positions"]
    diffs = [abs(a - b) for a, b in zip(ours.nll, plain["nll"])]
    assert sum(diffs) / len(diffs) < 0.1
    assert abs(math.log(plain["ppl"] / ours.ppl)) < 0.02
