"""Attention-scored eviction (H2O, TOVA, SnapKV): budgets, selection, positions, generate()."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import make_tiny_llama
from kv_streams import stream
from transformers import DynamicCache

from contextwindow.errors import ConfigError, ModelError
from contextwindow.kv import (
    POSITIONS,
    H2OPolicy,
    ScoredCache,
    SinkCache,
    SnapKVPolicy,
    TOVAPolicy,
    keep_indices,
    make_cache,
)
from contextwindow.kv.attention import attention_weights

BUDGET, SINKS = 12, 2
SCORED = ["h2o", "tova", "snapkv"]


def weights(*rows: list[float], heads: int = 1, group: int = 1) -> torch.Tensor:
    """Hand-built attention weights ``[heads, group, rows, tokens]``, the same in every head."""
    return torch.tensor(rows).expand(heads, group, -1, -1)


# -- selection on hand-built attention -----------------------------------------------------------


def test_keep_indices_pins_sinks_and_recent_and_takes_the_best_of_the_rest() -> None:
    priority = torch.tensor(
        [[0.0, 9.0, 1.0, 7.0, 2.0, 8.0, 0.0, 0.0], [0.0, 1.0, 9.0, 2.0, 8.0, 0.0, 7.0, 0.0]]
    )
    kept = keep_indices(priority, budget=5, sinks=1, recent=2)
    assert kept.tolist() == [[0, 1, 5, 6, 7], [0, 2, 4, 6, 7]]


def test_h2o_keeps_heavy_hitters_by_accumulated_attention_where_tova_follows_the_current_query() -> None:  # noqa: E501
    h2o = H2OPolicy(budget=4, sinks=0, recent=2)
    # step 1: four tokens, the queries pile their attention onto token 1
    first = h2o.priority(weights([0.05, 0.9, 0.05, 0.0]), None)
    # step 2: two new tokens; the current query has moved on to tokens 2 and 3
    now = [0.1, 0.02, 0.4, 0.3, 0.13, 0.05]
    second = h2o.priority(weights(now), first)
    torch.testing.assert_close(second, torch.tensor([[0.15, 0.92, 0.45, 0.3, 0.13, 0.05]]))
    # H2O: recent 4, 5 plus the two heaviest accumulated hitters of the rest, 1 and 2
    assert keep_indices(second, 4, 0, h2o.protected).tolist() == [[1, 2, 4, 5]]
    # TOVA: the four tokens the current query attends to most; token 1 (0.02) goes first
    tova = TOVAPolicy(budget=4, sinks=0)
    assert keep_indices(tova.priority(weights(now), None), 4, 0, 0).tolist() == [[0, 2, 3, 4]]


def test_tova_drops_the_token_the_current_query_attends_to_least_averaged_over_heads() -> None:
    policy = TOVAPolicy(budget=4, sinks=0)
    # two KV heads x two query heads; an earlier row (ignored) and the current query's row
    scores = torch.tensor(
        [
            [[[0.9, 0.0, 0.0, 0.1, 0.0], [0.1, 0.3, 0.1, 0.3, 0.2]]] * 2,
            [[[0.9, 0.0, 0.0, 0.1, 0.0], [0.1, 0.1, 0.5, 0.1, 0.2]]] * 2,
        ]
    )  # current-query means over heads: [0.1, 0.2, 0.3, 0.2, 0.2]
    priority = policy.priority(scores, None)
    assert priority.shape == (2, 5)
    torch.testing.assert_close(priority[0], torch.tensor([0.1, 0.2, 0.3, 0.2, 0.2]))
    assert keep_indices(priority, 4, 0, policy.protected).tolist() == [[1, 2, 3, 4]] * 2
    # with a sink the first token stays, whatever its score, and the next-lowest goes
    with_sink = TOVAPolicy(budget=4, sinks=1).priority(scores, None)
    assert keep_indices(with_sink, 4, 1, 0)[0, 0] == 0


def test_snapkv_keeps_the_window_and_the_pooled_neighbourhoods_of_what_it_attends_to() -> None:
    policy = SnapKVPolicy(budget=5, sinks=0, window=2, kernel=3)
    # ten tokens; the window (tokens 8, 9) attends to token 2 in head 0 and token 6 in head 1
    row0 = [0.0, 0.0, 0.8, 0.0, 0.05, 0.0, 0.0, 0.0, 0.1, 0.05]
    row1 = [0.0, 0.0, 0.0, 0.0, 0.05, 0.0, 0.8, 0.0, 0.1, 0.05]
    scores = torch.stack([weights(row0, row0), weights(row1, row1)])[:, 0]
    priority = policy.priority(scores, None)
    # max-pooling spreads each peak to its neighbours: 1, 2, 3 in head 0; 5, 6, 7 in head 1
    kept = keep_indices(priority, 5, 0, policy.protected)
    assert kept.tolist() == [[1, 2, 3, 8, 9], [5, 6, 7, 8, 9]]


def test_policies_reject_budgets_that_leave_nothing_to_score() -> None:
    with pytest.raises(ConfigError):
        H2OPolicy(budget=10, sinks=4, recent=6)
    with pytest.raises(ConfigError):
        TOVAPolicy(budget=4, sinks=4)
    with pytest.raises(ConfigError):
        SnapKVPolicy(budget=64, window=32, kernel=4)
    with pytest.raises(ConfigError, match="unknown policy"):
        make_cache(make_tiny_llama(), "lru", 64)


def test_attention_weights_are_the_causal_softmax_rows_of_grouped_heads() -> None:
    torch.manual_seed(0)
    query, key = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 5, 8)
    got = attention_weights(query, key, rows=2, scaling=0.5)
    assert got.shape == (2, 2, 2, 5)
    for head in range(4):
        logits = query[0, head, 1:] @ key[0, head // 2].T * 0.5
        logits[0, 4] = float("-inf")  # query row 1 of 3 sits at key 3: it cannot see key 4
        torch.testing.assert_close(got[head // 2, head % 2], logits.softmax(-1))


# -- the cache on a tiny model -------------------------------------------------------------------


@pytest.mark.parametrize("policy", SCORED)
def test_never_holds_more_than_the_budget_between_forwards(policy: str) -> None:
    model = make_tiny_llama()
    ids = torch.randint(0, 128, (80,), generator=torch.Generator().manual_seed(2))
    cache = make_cache(model, policy, BUDGET, sinks=SINKS)
    seen = 0
    for size in [1] * 9 + [4, 20, 1, 7] + [1] * 39:
        stream(model, cache, ids[seen:], [size])
        seen += size
        assert {layer.keys.shape[-2] for layer in cache.layers} == {min(seen, BUDGET)}
        assert {layer.values.shape[-2] for layer in cache.layers} == {min(seen, BUDGET)}
        assert cache.get_seq_length() == min(seen, BUDGET)
    assert cache.seen_tokens == seen == 80
    assert cache.get_max_length() == BUDGET
    # 2 layers x (K, V) x 2 KV heads x 12 slots x 16 dims x 4 bytes
    assert cache.nbytes() == 2 * 2 * 2 * BUDGET * 16 * 4
    for layer in cache.layers:  # the sinks are always held
        assert layer.origin[:, :SINKS].tolist() == [[0, 1], [0, 1]]


@pytest.mark.parametrize("policy", SCORED)
def test_within_budget_the_logits_equal_a_dense_cache_exactly(policy: str) -> None:
    model, reference = make_tiny_llama(), make_tiny_llama()  # the reference keeps plain SDPA
    ids = torch.randint(0, 128, (BUDGET,), generator=torch.Generator().manual_seed(4))
    chunks = [5, 1, 1, 4, 1]
    scored = stream(model, make_cache(model, policy, BUDGET, sinks=SINKS), ids, chunks)
    dense = stream(reference, DynamicCache(config=reference.config), ids, chunks)
    assert reference.config._attn_implementation == "sdpa"
    for a, b in zip(scored, dense):
        assert torch.equal(a, b)


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("policy", SCORED)
def test_kept_keys_equal_fresh_keys_at_their_new_slots_or_stream_positions(
    policy: str, positions: str
) -> None:
    # Layer-0 keys depend only on the token and its position: after any eviction, each head's
    # kept keys must be what a dense forward over that head's kept tokens computes, numbered
    # 0, 1, 2... (slots) or at their stream indices (stream).
    model = make_tiny_llama()
    ids = torch.randint(0, 128, (50,), generator=torch.Generator().manual_seed(5))
    cache = make_cache(model, policy, BUDGET, sinks=SINKS, positions=positions)
    seen = 0
    for size in [6, 1, 9, 1, 1, 13, 1, 1, 17]:
        stream(model, cache, ids[seen:], [size])
        seen += size
        layer = cache.layers[0]
        for head, kept in enumerate(layer.origin.tolist()):
            assert kept == sorted(kept) and len(set(kept)) == len(kept)
            at = kept if positions == "stream" else list(range(len(kept)))
            fresh = DynamicCache(config=model.config)
            with torch.no_grad():
                model(input_ids=ids[kept][None], position_ids=torch.tensor([at]), cache=fresh)
            torch.testing.assert_close(
                layer.keys[0, head], fresh.layers[0].keys[0, head], atol=1e-5, rtol=0
            )


def test_a_layer_evicts_per_head_what_hand_built_weights_say_and_moves_what_it_keeps() -> None:
    model = make_tiny_llama()
    cache = ScoredCache(model, H2OPolicy(budget=5, sinks=1, recent=2))
    layer = cache.layers[0]
    torch.manual_seed(3)
    keys, values = torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16)
    layer.update(keys, values)
    scores = torch.full((2, 2, 8, 8), 0.01)
    scores[0, ..., 3] = scores[0, ..., 5] = 0.4  # head 0 reads tokens 3 and 5
    scores[1, ..., 2] = scores[1, ..., 4] = 0.4  # head 1 reads tokens 2 and 4
    layer.observe(scores)
    assert layer.origin.tolist() == [[0, 3, 5, 6, 7], [0, 2, 4, 6, 7]]
    for head, kept in enumerate(layer.origin.tolist()):
        assert torch.equal(layer.values[0, head], values[0, head, kept])
        moved = layer.shift.move(keys[0, head, kept], torch.arange(5) - torch.tensor(kept))
        torch.testing.assert_close(layer.keys[0, head], moved)
    # the moved keys are the originals rotated back by the gaps closed before them
    assert torch.equal(layer.keys[0, 0, 0], keys[0, 0, 0])
    layer.observe(scores)  # weights for a layer that is not waiting are ignored
    assert layer.origin.tolist() == [[0, 3, 5, 6, 7], [0, 2, 4, 6, 7]]


@pytest.mark.parametrize(
    ("policy", "positions"),
    [("sinks", "slots"), *((p, "slots") for p in SCORED), *((p, "stream") for p in SCORED)],
)
def test_generate_and_a_manual_loop_agree_token_for_token(policy: str, positions: str) -> None:
    model = make_tiny_llama()
    prompt = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(8))
    new = 40
    generated = model.generate(
        prompt,
        cache=make_cache(model, policy, BUDGET, sinks=SINKS, positions=positions),
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
    )[0, 6:].tolist()
    cache = make_cache(model, policy, BUDGET, sinks=SINKS, positions=positions)
    eos = model.generation_config.eos_token_id  # min_new_tokens keeps generate() from picking it
    looped: list[int] = []
    with torch.no_grad():
        logits = model(input_ids=prompt, cache=cache).logits[0, -1]
        for _ in range(new):
            logits[eos] = float("-inf")
            looped.append(int(logits.argmax()))
            logits = model(input_ids=torch.tensor([[looped[-1]]]), cache=cache).logits[0, -1]
    assert generated == looped
    assert cache.get_seq_length() == BUDGET


def test_stream_positions_keep_the_distances_that_slots_close(tiny_llama: Any) -> None:
    # One chunk, one eviction from the same scores: the same tokens are kept either way, but
    # only the slot numbering re-rotates them (the sinks stay where they are in both).
    ids = torch.randint(0, 128, (30,), generator=torch.Generator().manual_seed(2))
    caches = {p: make_cache(tiny_llama, "tova", BUDGET, sinks=SINKS, positions=p)
              for p in POSITIONS}
    for cache in caches.values():
        stream(tiny_llama, cache, ids, [30])
    slots, streamed = (caches[p].layers[0] for p in POSITIONS)
    assert slots.seen == streamed.seen == 30
    assert slots.keys.shape == streamed.keys.shape == (1, 2, BUDGET, 16)
    torch.testing.assert_close(slots.keys[..., :SINKS, :], streamed.keys[..., :SINKS, :])
    moved = slots.origin[0] != torch.arange(BUDGET)
    assert bool(moved.any())
    assert not torch.allclose(slots.keys[0, 0, moved], streamed.keys[0, 0, moved])
    with pytest.raises(ConfigError, match="positions must be one of slots, stream"):
        make_cache(tiny_llama, "tova", BUDGET, positions="absolute")


def test_make_cache_builds_each_policy_at_its_budget(tiny_llama: Any) -> None:
    assert isinstance(make_cache(tiny_llama, "full"), DynamicCache)
    sinks = make_cache(tiny_llama, "sinks", 64, sinks=4)
    assert isinstance(sinks, SinkCache) and (sinks.sinks, sinks.window) == (4, 60)
    snap = make_cache(tiny_llama, "snapkv", 40, sinks=4)
    assert snap.policy == SnapKVPolicy(budget=40, sinks=4, window=18)
    assert make_cache(tiny_llama, "h2o", 64).policy.protected == 30


def test_a_model_that_stops_passing_weights_is_an_error(tiny_llama: Any) -> None:
    cache = make_cache(tiny_llama, "tova", BUDGET, sinks=SINKS)
    tiny_llama.set_attn_implementation("sdpa")
    with pytest.raises(ModelError, match="attention weights"):
        stream(tiny_llama, cache, torch.zeros(4, dtype=torch.long), [2, 2])


# -- evaluation and CLI --------------------------------------------------------------------------


def test_cli_evict_sweep_streams_every_policy_and_writes_json_and_plot(
    tiny_chat_dir: Any, tmp_path: Any, capsys: Any
) -> None:
    import json

    from contextwindow.cli import main

    novel = tmp_path / "novel.txt"
    novel.write_text("It was a truth universally acknowledged, said Emma. " * 60, encoding="utf-8")
    plot = tmp_path / "sweep.png"
    argv = ["evict-sweep", "--policies", "sinks,tova", "--budgets", "48,96", "--lengths", "160",
            "--trials", "2", "--chunk", "32", "--positions", "stream", "--text", str(novel),
            "--ppl-tokens", "120",
            "--model", str(tiny_chat_dir), "--plot", str(plot), "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    runs = [(n["policy"], n["budget"]) for n in data["needles"]]
    assert runs == [("full", None), ("sinks", 48), ("sinks", 96), ("tova", 48), ("tova", 96)]
    assert all(n["trials"] == 2 and n["length"] == 160 for n in data["needles"])
    held = {(n["policy"], n["budget"]): n["max_cache_tokens"] for n in data["needles"]}
    assert held[("sinks", 48)] == held[("tova", 48)] == 48 and held[("full", None)] > 150
    assert [(p["policy"], p["budget"]) for p in data["perplexity"]] == runs
    assert plot.stat().st_size > 10_000


@pytest.mark.parametrize(
    "extra, message",
    [(["--policies", "lru"], "unknown policies"), (["--budgets", "4"], "budget"),
     (["--depths", "1.5"], "between 0 and 1"),
     (["--positions", "absolute"], "unknown --positions")],
)
def test_cli_evict_sweep_rejects_bad_options_before_loading(
    capsys: Any, extra: list[str], message: str
) -> None:
    from contextwindow.cli import main

    assert main(["evict-sweep", "--model", "/nonexistent", *extra]) == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_cli_stream_adds_each_policy_at_the_sink_budget(
    tiny_chat_dir: Any, tmp_path: Any, capsys: Any
) -> None:
    import json

    from contextwindow.cli import main

    novel = tmp_path / "novel.txt"
    novel.write_text("Mr. Knightley walked in the garden with Harriet. " * 40, encoding="utf-8")
    argv = ["stream", "--text", str(novel), "--tokens", "150", "--sinks", "4", "--window", "40",
            "--chunk", "16", "--segment", "50", "--policy", "tova", "--policy", "h2o",
            "--model", str(tiny_chat_dir), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(summary["ppl"]) == ["dense", "window 0+44", "sinks 4+40", "tova 44", "h2o 44"]
    assert summary["max_cache_tokens"]["tova 44"] == summary["max_cache_tokens"]["h2o 44"] == 44
    assert main([*argv[:-3], "--policy", "lru", "--model", "/nonexistent"]) == 2
    assert "unknown --policy" in capsys.readouterr().err
