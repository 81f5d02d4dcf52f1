"""Attention-sink streaming on SmolLM2-135M: quality far past the trained length, speed, memory.

Prints ONE JSON object on stdout (progress on stderr) and writes the plot.

Quality: perplexity per segment of a long novel for dense attention, a plain window (0 + W),
sinks + window (4 + W-4), the same without re-positioning, and the sliding-window
re-computation baseline (a fresh forward over the W previous tokens per block; only a few
blocks per segment, it is expensive). Speed: single-token decode latency of the sink cache early
and late in the stream (should be constant), against re-computing the window for each token.
Memory: KV-cache bytes of the sink cache over the stream against a dense cache.

    python benchmarks/bench_streaming.py                      # full run (~20k tokens)
    python benchmarks/bench_streaming.py --tokens 3000 --speed-at 1100,2000 --plot /tmp/s.png
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_out_argument, emit, log, machine, provenance

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = ROOT.parent / "shared" / "corpora" / "austen_emma.txt"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    p.add_argument("--tokens", type=int, default=20480, help="stream length (2.5x trained = 20480)")
    p.add_argument("--chunk", type=int, default=64, help="tokens per forward in the quality runs")
    p.add_argument("--segment", type=int, default=2048)
    p.add_argument("--sinks", type=int, default=4)
    p.add_argument("--window", type=int, default=1020)
    p.add_argument("--samples", type=int, default=3, help="re-computation blocks per segment")
    p.add_argument("--speed-at", default="1100,10000", help="stream positions for decode timing")
    p.add_argument("--decode-steps", type=int, default=9)
    p.add_argument("--recompute-steps", type=int, default=3)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is steadier on shared cores)"
    )
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "streaming.png")
    p.add_argument("--skip-dense", action="store_true", help="leave out the (slowest) dense run")
    add_out_argument(p, "bench_streaming")
    return p.parse_args()


def progress_printer(label: str, every: float = 30.0) -> Any:
    """A progress callback that logs a line to stderr at most every ``every`` seconds."""
    started = last = time.perf_counter()

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= every or done == total:
            last = now
            log(f"  {label}: {done}/{total} ({now - started:.0f}s)")

    return report


def r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


def ppl_at(result: Any, positions: set[int]) -> float | None:
    """Perplexity of ``result`` restricted to the given stream positions."""
    vals = [v for p, v in zip(result.positions, result.nll) if p in positions]
    return math.exp(sum(vals) / len(vals)) if vals else None


def chunk_ms_per_token(result: Any, position: int, chunk: int, around: int = 5) -> float | None:
    """Median forward time per token of the ``around`` chunks nearest ``position``."""
    near = sorted(result.chunk_seconds, key=lambda item: abs(item[0] - position))[:around]
    return 1000 * statistics.median(s for _, s in near) / chunk if near else None


def speed_pass(model: Any, ids: Any, args: argparse.Namespace, at: list[int]) -> dict[str, Any]:
    """Stream into a sink cache; at each position in ``at`` time single-token decode steps."""
    import torch

    from contextwindow.kv import SinkCache

    cache = SinkCache(model, sinks=args.sinks, window=args.window)
    fed, out = 0, {}
    with torch.inference_mode():
        for target in at:
            while fed < target:
                step = min(args.chunk, target - fed)
                model(input_ids=ids[fed : fed + step][None], cache=cache)
                fed += step
            times = []
            for _ in range(args.decode_steps):
                tick = time.perf_counter()
                model(input_ids=ids[fed : fed + 1][None], cache=cache)
                times.append(time.perf_counter() - tick)
                fed += 1
            out[target] = {
                "decode_ms_median": 1000 * statistics.median(times),
                "decode_ms_all": [round(1000 * t, 1) for t in times],
                "cache_tokens": cache.get_seq_length(),
                "cache_bytes": cache.nbytes(),
                "stream_tokens": cache.seen_tokens,
            }
            log(f"  sink decode at {target}: {out[target]['decode_ms_median']:.1f} ms/token")
    return out


def recompute_latency(model: Any, ids: Any, position: int, budget: int, steps: int) -> list[float]:
    """Per-token cost of a sliding window with re-computation: one fresh forward per token, as
    cheap as it honestly gets (after an untimed warm-up forward, no KV cache kept, logits for
    the last position only: decoding needs nothing else)."""
    import torch

    times = []
    with torch.inference_mode():
        model(input_ids=ids[position - budget - 1 : position][None], use_cache=False,
              logits_to_keep=1)  # warm-up
        for k in range(steps):
            end = position + k
            tick = time.perf_counter()
            model(input_ids=ids[end - budget - 1 : end][None], use_cache=False, logits_to_keep=1)
            times.append(time.perf_counter() - tick)
    return times


def main() -> None:
    args = parse_args()
    import torch
    import transformers

    from contextwindow.evaluate.report import plot_streaming
    from contextwindow.evaluate.streaming import (
        encode_text,
        recompute_perplexity,
        streaming_perplexity,
    )
    from contextwindow.kv import SinkCache
    from contextwindow.models import load_model

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    at = [int(x) for x in args.speed_at.split(",") if x.strip()]
    model, tokenizer = load_model()
    trained = model.config.max_position_embeddings
    budget = args.sinks + args.window
    need = max(args.tokens, max(at) + args.decode_steps + args.recompute_steps + 1)
    ids = encode_text(tokenizer, args.text.read_text(encoding="utf-8"), need)
    stream_ids = ids[: args.tokens].tolist()
    log(f"{len(stream_ids)} tokens of {args.text.name}; trained length {trained}; budget {budget}")

    # -- quality ---------------------------------------------------------------------------------
    runs: list[tuple[str, Any]] = [
        (f"window 0+{budget}", lambda: SinkCache(model, sinks=0, window=budget)),
        (
            f"sinks {args.sinks}+{args.window}",
            lambda: SinkCache(model, sinks=args.sinks, window=args.window),
        ),
        (
            f"sinks {args.sinks}+{args.window} no reposition",
            lambda: SinkCache(model, sinks=args.sinks, window=args.window, reposition=False),
        ),
    ]
    if not args.skip_dense:
        runs.append(("dense", lambda: None))
    results = {}
    for label, make in runs:
        log(f"quality: {label}")
        results[label] = streaming_perplexity(
            model,
            None,
            stream_ids,
            cache=make(),
            chunk=args.chunk,
            label=label,
            progress=progress_printer(label),
        )
        log(f"  ppl {results[label].ppl:.2f} in {results[label].seconds:.0f}s")
    rc_label = f"recompute {budget} (sampled)"
    log(f"quality: {rc_label}")
    results[rc_label] = recompute_perplexity(
        model,
        None,
        stream_ids,
        window=budget,
        stride=args.chunk,
        segment=args.segment,
        samples=args.samples,
        label=rc_label,
        progress=progress_printer(rc_label),
    )
    log(f"  ppl {results[rc_label].ppl:.2f} in {results[rc_label].seconds:.0f}s")

    total = len(stream_ids)
    n_seg = math.ceil(total / args.segment)
    segments = [[k * args.segment, min((k + 1) * args.segment, total)] for k in range(n_seg)]
    per_segment = {
        label: [r(v) for v in res.segment_ppl(args.segment, total=total)]
        for label, res in results.items()
    }
    sink_label, window_label = runs[1][0], runs[0][0]
    sinks, window, rc = results[sink_label], results[window_label], results[rc_label]
    # Sinks against re-computation on exactly the positions the baseline scored.
    sinks_on_rc, ratio_rc = [], []
    for lo, hi in segments:
        pos = {p for p in rc.positions if lo <= p < hi}
        a, b = ppl_at(sinks, pos), ppl_at(rc, pos)
        sinks_on_rc.append(r(a))
        ratio_rc.append(r(a / b) if a and b else None)
    window_over_sinks_seg = [
        r(w / s) if w and s else None
        for w, s in zip(per_segment[window_label], per_segment[sink_label])
    ]
    ratios: dict[str, Any] = {
        "sinks_over_recompute_per_segment": ratio_rc,
        "window_over_sinks_overall": r(window.ppl / sinks.ppl),
        "window_over_sinks_per_segment": window_over_sinks_seg,
        "window_over_sinks_after_first_segment": r(
            ppl_at(window, set(range(args.segment, total)))
            / ppl_at(sinks, set(range(args.segment, total)))
        )
        if total > args.segment
        else None,
        "no_reposition_over_sinks_overall": r(results[runs[2][0]].ppl / sinks.ppl),
    }
    targets: dict[str, Any] = {
        "sinks_within_10pct_of_recompute_every_segment": all(
            x is not None and x <= 1.10 for x in ratio_rc
        ),
        "sinks_1.3x_better_than_plain_window": ratios["window_over_sinks_overall"] >= 1.3,
    }
    if "dense" in results:
        past = set(range(trained, total))
        before = set(range(1, min(trained, total)))
        dense = results["dense"]
        ratios["dense_over_sinks_before_trained_length"] = r(
            ppl_at(dense, before) / ppl_at(sinks, before)
        )
        if past:
            ratios["dense_over_sinks_past_trained_length"] = r(
                ppl_at(dense, past) / ppl_at(sinks, past)
            )
            targets["dense_broken_past_trained_length"] = (
                ratios["dense_over_sinks_past_trained_length"] >= 2.0
            )

    # -- speed and memory -------------------------------------------------------------------------
    log("speed: sink-cache decode")
    decode = speed_pass(model, ids, args, at)
    late = max(at)
    log(f"speed: sliding window with re-computation at {late}")
    rc_times = recompute_latency(model, ids, late, budget, args.recompute_steps)
    rc_ms = 1000 * statistics.median(rc_times)
    early_ms, late_ms = decode[min(at)]["decode_ms_median"], decode[late]["decode_ms_median"]
    speed = {
        "sink_decode_ms_median": {str(k): r(v["decode_ms_median"], 1) for k, v in decode.items()},
        "sink_decode_ms_all": {str(k): v["decode_ms_all"] for k, v in decode.items()},
        "late_over_early": r(late_ms / early_ms),
        "recompute_ms_per_token_median": r(rc_ms, 1),
        "recompute_ms_all": [round(1000 * t, 1) for t in rc_times],
        "recompute_over_sinks": r(rc_ms / late_ms, 1),
        "chunk_ms_per_token": {
            label: {str(p): r(chunk_ms_per_token(res, p, args.chunk), 2) for p in at if p < total}
            for label, res in results.items()
            if label != rc_label
        },
    }
    targets["sink_decode_constant_within_1.3x"] = speed["late_over_early"] <= 1.3
    targets["sinks_20x_faster_than_recompute"] = speed["recompute_over_sinks"] >= 20
    sink_bytes = {str(k): v["cache_bytes"] for k, v in decode.items()}
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim * 4  # fp32 K and V
    memory: dict[str, Any] = {
        "kv_bytes_per_token": per_token,
        "sink_cache_bytes_bound": per_token * budget,
        "sink_cache_bytes_at": sink_bytes,
        "sink_cache_bytes_max_over_stream": sinks.max_cache_bytes,
        "sink_cache_tokens_max_over_stream": sinks.max_cache_tokens,
    }
    if "dense" in results:
        memory["dense_cache_bytes_max_over_stream"] = results["dense"].max_cache_bytes
        memory["dense_over_sinks"] = r(results["dense"].max_cache_bytes / sinks.max_cache_bytes, 1)
    targets["memory_bounded"] = (
        sinks.max_cache_tokens == budget
        and sinks.max_cache_bytes == per_token * budget
        and set(sink_bytes.values()) == {per_token * budget}
    )

    order = ["dense"] + [label for label in results if label != "dense"]
    plot_streaming(
        [results[label] for label in order if label in results],
        args.plot,
        trained_length=trained,
        title=f"SmolLM2-135M on {args.text.name}: {total} tokens, chunks of {args.chunk}",
    )
    emit(
        {
            "benchmark": "streaming",
            "machine": {
                **machine(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "torch_threads": args.threads,
                "gpu": torch.cuda.is_available(),
            },
            "inputs": {
                "model": "SmolLM2-135M-Instruct (fp32)",
                "text": args.text.name,
                "tokens": total,
                "trained_length": trained,
                "chunk": args.chunk,
                "segment": args.segment,
                "sinks": args.sinks,
                "window": args.window,
                "budget": budget,
                "recompute_blocks_per_segment": args.samples,
                "speed_at": at,
                "decode_steps": args.decode_steps,
                "recompute_steps": args.recompute_steps,
            },
            "quality": {
                "segments": segments,
                "ppl_per_segment": per_segment,
                "sinks_ppl_on_recompute_positions": sinks_on_rc,
                "ppl_overall": {label: r(res.ppl) for label, res in results.items()},
                "seconds": {label: r(res.seconds, 1) for label, res in results.items()},
                "ratios": ratios,
            },
            "speed": speed,
            "memory": memory,
            "targets": targets,
            "plot": str(
                args.plot.relative_to(ROOT) if args.plot.is_relative_to(ROOT) else args.plot
            ),
            "seconds_total": r(time.perf_counter() - started, 1),
            **provenance(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
