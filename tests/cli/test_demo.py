"""``contextwindow demo --quick`` end to end on a tiny model, and its parts checked exactly."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from contextwindow.cli import main
from contextwindow.cli.demo import memory_rows, part_sink_stream
from contextwindow.samples import sample_conversation
from contextwindow.tokens import TokenCounter


def table_row(output: str, label: str, after: int = 0) -> list[str]:
    """The cells of the first table row starting with ``label`` after offset ``after``."""
    for line in output[after:].splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r}")


def test_quick_demo_runs_every_part(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str],
                                    tiny_chat_dir: Path) -> None:
    from transformers import AutoTokenizer

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["demo", "--model", str(tiny_chat_dir), "--quick"]) == 0
    out = capsys.readouterr().out
    for heading in ("1. A long conversation through each memory",
                    "2. The local model, chatting inside a budget",
                    "3. A long generation through the attention-sink KV cache",
                    "4. Where to go next"):
        assert heading in out

    # Part 1: both tables show exactly what each memory keeps (16 turns, budget 384).
    conversation = sample_conversation(16, seed=7)
    local = TokenCounter.from_hf(AutoTokenizer.from_pretrained(tiny_chat_dir))
    for title, counter in (("counted for gpt-4o", TokenCounter.for_model("gpt-4o")),
                           ("counted for the local model's chat template", local)):
        start = out.index(title)
        rows = memory_rows(conversation, 384, counter)
        assert len(rows) >= 4
        for row in rows:
            cells = table_row(out, row["memory"], start)
            assert cells[1] == f"{row['kept']} of {len(conversation)}"
            tokens = f"{row['tokens']:,} / 384"
            assert cells[2] == (f"{tokens} over" if row["tokens"] > 384 else tokens)
            assert cells[3:6] == [str(row["pinned"]), str(row["dropped"]),
                                  str(row["summarized"])]
        by_name = {row["memory"]: row for row in rows}
        assert by_name["Buffer"]["tokens"] > 384  # the baseline overflows
        assert all(row["tokens"] <= 384 for name, row in by_name.items() if name != "Buffer")
        assert by_name["SinkWindow (keep 2)"]["pinned"] == 3

    # Part 2: three scripted turns, each answered, with a status line; the budget forces drops.
    assert out.count("you> ") == 3 and out.count("assistant> ") == 3
    statuses = re.findall(r"context (\d+)/100 tokens · (\d+) of (\d+) messages · pinned (\d+) · "
                          r"dropped (\d+)", out)
    assert len(statuses) == 3
    assert all(int(used) <= 100 for used, *_ in statuses)
    assert [int(total) for _, _, total, _, _ in statuses] == [3, 5, 7]
    assert int(statuses[-1][4]) > 0

    # Part 3: the sink cache stays at sinks + window while the dense one grows.
    sink_rows = re.findall(r"│\s+(\d+) │\s+(\d+) │\s+([\d.,]+ KiB) │\s+(\d+) │\s+([\d.,]+ KiB) │",
                           out)
    assert len(sink_rows) == 6
    assert {row[1] for row in sink_rows} == {"32"} and len({row[2] for row in sink_rows}) == 1
    assert [row[0] for row in sink_rows] == [row[3] for row in sink_rows]
    assert "and keep growing" in out
    assert "benchmarks/" in out and "docs/" in out
    assert re.search(r"demo finished in \d+ s", out)


def test_sink_stream_checkpoints_are_exact(tiny_chat_dir: Path) -> None:
    from contextwindow.generation import Generator

    generator = Generator.load(str(tiny_chat_dir))
    console = Console(file=io.StringIO(), width=120)
    result = part_sink_stream(console, generator, quick=True)
    capacity = result["sinks"] + result["window"]
    checkpoints: list[dict[str, Any]] = result["checkpoints"]
    per_token = checkpoints[0]["sink_bytes"] // checkpoints[0]["sink_tokens"]
    config = generator.model.config
    # K and V, every layer, fp32: 2 * layers * kv_heads * head_dim * 4 bytes per token.
    assert per_token == 2 * config.num_hidden_layers * config.num_key_value_heads * 8 * 4
    for point in checkpoints:
        assert point["sink_tokens"] == min(point["streamed"], capacity)
        assert point["sink_bytes"] == per_token * point["sink_tokens"]
        assert point["dense_bytes"] == per_token * point["streamed"]
    assert checkpoints[-1]["streamed"] - checkpoints[0]["streamed"] == 40


def test_sink_stream_is_shown_beside_the_dense_stream(tiny_chat_dir: Path) -> None:
    """The dense column is the model's greedy continuation (recomputed here without any
    cache), the sink column the sink stream's first tokens, and the shared run is counted."""
    import torch

    from contextwindow.cli.demo import LIST_PROMPT, LIST_START
    from contextwindow.generation import Generator
    from contextwindow.templates import chat_template_ids

    generator = Generator.load(str(tiny_chat_dir))
    console = Console(file=io.StringIO(), width=200)
    result = part_sink_stream(console, generator, quick=True)
    ids = (chat_template_ids(generator.tokenizer, [{"role": "user", "content": LIST_PROMPT}])
           + generator.tokenizer.encode(LIST_START, add_special_tokens=False))
    assert result["prompt_tokens"] == len(ids)
    reference: list[int] = []
    with torch.inference_mode():
        for _ in range(len(result["dense"])):
            logits = generator.model(torch.tensor([ids + reference])).logits[0, -1]
            logits[list(generator.eos_ids)] = float("-inf")
            reference.append(int(logits.argmax()))
    assert result["dense"] == reference and len(reference) == 48
    sink = result["sink"]
    same = next((i for i, (a, b) in enumerate(zip(reference, sink)) if a != b), 48)
    assert result["same"] == same
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert "dense cache (keeps every token)" in printed
    evicting = max(0, 32 - len(ids))
    assert (f"Identical for the first {same} of 48 tokens; the sink cache evicts from "
            f"generated token {evicting} on.") in printed
