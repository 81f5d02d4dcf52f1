"""Streaming perplexity: dense, sink cache and re-computation scorers; the `stream` command."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import corpus_text, make_tiny_llama

from contextwindow.errors import ConfigError
from contextwindow.evaluate import (
    StreamResult,
    plot_streaming,
    recompute_perplexity,
    streaming_perplexity,
)
from contextwindow.evaluate.streaming import recompute_blocks
from contextwindow.kv import SinkCache


def full_forward_nll(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """NLL of tokens 1..n-1 from one dense forward over the whole sequence."""
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0]
    return F.cross_entropy(logits[:-1], ids[1:], reduction="none")


def test_segment_ppl_and_overall_ppl_are_exact() -> None:
    result = StreamResult(label="x", positions=[1, 2, 3, 5, 9], nll=[1.0, 2.0, 3.0, 0.5, 4.0])
    assert result.tokens == 5
    assert result.ppl == pytest.approx(math.exp(10.5 / 5))
    assert result.segment_ppl(4) == [
        pytest.approx(math.exp(2.0)),
        pytest.approx(math.exp(0.5)),
        pytest.approx(math.exp(4.0)),
    ]
    # a fixed stream length adds the empty trailing segment
    assert result.segment_ppl(4, total=16)[3] is None
    with pytest.raises(ConfigError):
        result.segment_ppl(0)


def test_dense_streaming_equals_one_full_forward(tiny_llama: Any) -> None:
    ids = torch.randint(0, 128, (50,), generator=torch.Generator().manual_seed(0))
    result = streaming_perplexity(tiny_llama, None, ids.tolist(), chunk=7)
    assert result.label == "dense"
    assert result.positions == list(range(1, 50))
    torch.testing.assert_close(
        torch.tensor(result.nll), full_forward_nll(tiny_llama, ids), atol=1e-5, rtol=0
    )
    assert result.max_cache_tokens == 49  # the last token is a target only, never fed
    # 2 layers x (K, V) x 2 KV heads x 49 tokens x 16 dims x 4 bytes
    assert result.max_cache_bytes == 2 * 2 * 2 * 49 * 16 * 4


def test_sink_cache_scores_equal_dense_until_the_first_eviction(tiny_llama: Any) -> None:
    ids = torch.randint(0, 128, (24,), generator=torch.Generator().manual_seed(1)).tolist()
    dense = streaming_perplexity(tiny_llama, None, ids, chunk=4)
    sink = streaming_perplexity(
        tiny_llama, None, ids, chunk=4, cache=SinkCache(tiny_llama, sinks=4, window=20)
    )
    assert sink.nll == dense.nll  # exact: nothing was evicted, same arithmetic
    assert sink.max_cache_tokens == 23


def test_max_tokens_and_cache_bound(tiny_llama: Any) -> None:
    ids = torch.randint(0, 128, (90,), generator=torch.Generator().manual_seed(2)).tolist()
    result = streaming_perplexity(
        tiny_llama,
        None,
        ids,
        chunk=5,
        max_tokens=80,
        cache=SinkCache(tiny_llama, sinks=2, window=10),
    )
    assert result.positions == list(range(1, 80))
    assert result.max_cache_tokens == 12
    assert result.max_cache_bytes == 2 * 2 * 2 * 12 * 16 * 4
    seen: list[tuple[int, int]] = []
    streaming_perplexity(
        tiny_llama, None, ids[:20], chunk=8, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(8, 19), (16, 19), (19, 19)]


def test_window_cache_equals_recomputation_on_a_one_layer_model() -> None:
    # One layer: a cached K/V is what a fresh forward would compute, so a plain window cache
    # (repositioned) and the re-computation baseline must agree on every token.
    model = make_tiny_llama(num_hidden_layers=1)
    ids = torch.randint(0, 128, (61,), generator=torch.Generator().manual_seed(3)).tolist()
    cached = streaming_perplexity(
        model, None, ids, chunk=4, cache=SinkCache(model, sinks=0, window=9)
    )
    fresh = recompute_perplexity(model, None, ids, window=9, stride=4)
    assert fresh.positions == cached.positions == list(range(1, 61))
    torch.testing.assert_close(torch.tensor(cached.nll), torch.tensor(fresh.nll), atol=1e-5, rtol=0)
    assert fresh.max_cache_tokens == 9 + 4 - 1 + 1  # window + the block's inputs


def test_recompute_with_a_window_covering_everything_equals_dense(tiny_llama: Any) -> None:
    ids = torch.randint(0, 128, (40,), generator=torch.Generator().manual_seed(4))
    result = recompute_perplexity(tiny_llama, None, ids.tolist(), window=64, stride=8)
    torch.testing.assert_close(
        torch.tensor(result.nll), full_forward_nll(tiny_llama, ids), atol=1e-5, rtol=0
    )


def test_recompute_sampling_scores_evenly_spaced_blocks(tiny_llama: Any) -> None:
    assert recompute_blocks(20, stride=4) == [1, 5, 9, 13, 17]
    assert recompute_blocks(64, stride=4, segment=32, samples=2) == [6, 22, 38, 54]
    with pytest.raises(ConfigError):
        recompute_blocks(64, stride=8, segment=4, samples=2)
    ids = torch.randint(0, 128, (64,), generator=torch.Generator().manual_seed(5))
    result = recompute_perplexity(
        tiny_llama, None, ids.tolist(), window=6, stride=4, segment=32, samples=2
    )
    assert result.positions == [p for s in (6, 22, 38, 54) for p in range(s, s + 4)]
    # target 22 is predicted from tokens 15..21 (window 6 + the token before it)
    with torch.no_grad():
        logits = tiny_llama(input_ids=ids[15:22][None]).logits[0, -1]
    assert result.nll[4] == pytest.approx(F.cross_entropy(logits, ids[22]).item(), abs=1e-5)


def test_bad_inputs_are_config_errors(tiny_llama: Any) -> None:
    with pytest.raises(ConfigError):
        streaming_perplexity(tiny_llama, None, [1, 2, 3], chunk=0)
    with pytest.raises(ConfigError):
        streaming_perplexity(tiny_llama, None, [1])
    with pytest.raises(ConfigError):
        streaming_perplexity(tiny_llama, None, "text needs a tokenizer")


def test_plot_is_written(tmp_path: Any, tiny_llama: Any) -> None:
    ids = torch.randint(0, 128, (40,), generator=torch.Generator().manual_seed(6)).tolist()
    dense = streaming_perplexity(tiny_llama, None, ids, chunk=8)
    sampled = recompute_perplexity(tiny_llama, None, ids, window=8, stride=4, segment=20, samples=1)
    path = plot_streaming([dense, sampled], tmp_path / "p" / "s.png", trained_length=30, smooth=8)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_smollm2_sinks_stay_close_to_dense_on_1024_tokens(smollm2: Any) -> None:
    model, tokenizer = smollm2
    text = corpus_text("austen_emma.txt")
    dense = streaming_perplexity(model, tokenizer, text, max_tokens=1024, chunk=64)
    sinks = streaming_perplexity(
        model,
        tokenizer,
        text,
        max_tokens=1024,
        chunk=64,
        cache=SinkCache(model, sinks=4, window=252),
    )
    assert dense.tokens == sinks.tokens == 1023
    assert sinks.max_cache_tokens == 256
    assert sinks.ppl <= 1.15 * dense.ppl
    assert sinks.ppl >= dense.ppl * 0.95  # less context cannot help much either


@pytest.mark.slow
def test_stream_command_prints_a_table_and_writes_a_plot(smollm2: Any, tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from contextwindow.cli import app

    text = tmp_path / "emma.txt"
    text.write_text(corpus_text("austen_emma.txt")[:6000], encoding="utf-8")
    plot = tmp_path / "stream.png"
    result = CliRunner().invoke(
        app,
        [
            "stream",
            "--text",
            str(text),
            "--tokens",
            "300",
            "--sinks",
            "4",
            "--window",
            "60",
            "--segment",
            "100",
            "--plot",
            str(plot),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert set(summary["ppl"]) == {"dense", "window 0+64", "sinks 4+60"}
    assert summary["tokens"] == 300
    assert len(summary["segments"]["dense"]) == 3
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sinks", "-1"], "sinks must be an integer >= 0"),
        (["--window", "0"], "window must be an integer >= 1"),
        (["--recompute", "--segment", "8", "--chunk", "64"], "--segment (8) must be >= --chunk"),
        (["--tokens", "1"], "--tokens must be >= 2"),
    ],
)
def test_stream_command_rejects_bad_sizes_before_loading_a_model(
    tmp_path: Any, capsys: Any, extra: list[str], message: str
) -> None:
    from contextwindow.cli import main

    text = tmp_path / "t.txt"
    text.write_text("some text", encoding="utf-8")
    # a model directory that does not exist: reaching load_model would be a different error
    argv = ["stream", "--text", str(text), "--model", str(tmp_path / "no-model"), *extra]
    assert main(argv) == 2
    assert message in " ".join(capsys.readouterr().err.split())
