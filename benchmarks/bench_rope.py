"""RoPE scaling past the trained length: perplexity per position bucket and passkey accuracy.

Prints ONE JSON object on stdout (inputs, per-method results, medians, ratios, targets); progress
goes to stderr. ``--partial FILE`` also rewrites the JSON after every finished cell, so a run that
is stopped early still leaves its numbers. Defaults: SmolLM2-135M-Instruct (trained 8,192),
Emma from ../shared/corpora, 16,384 tokens, factor 2.

    python benchmarks/bench_rope.py                       # full run (about an hour on 2 cores)
    python benchmarks/bench_rope.py --length 4096 --bucket 1024 --passkey-lengths 2048 --trials 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = ROOT.parent / "shared" / "corpora" / "austen_emma.txt"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def parse_trials(default: int, spec: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        length, _, n = part.partition("=")
        out[int(length)] = int(n)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="local model dir (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    ap.add_argument("--length", type=int, default=16384, help="perplexity length (tokens)")
    ap.add_argument("--bucket", type=int, default=2048)
    ap.add_argument("--factor", type=float, default=2.0)
    ap.add_argument("--ppl-methods", default="none,linear,ntk,dynamic,yarn,llama3")
    ap.add_argument("--passkey-methods", default="none,linear,ntk,dynamic,yarn")
    ap.add_argument("--passkey-lengths", default="4096,8192,12288,16384")
    ap.add_argument("--trials", type=int, default=10, help="passkey trials per cell")
    ap.add_argument("--trials-at", default="", help="per-length overrides, e.g. 12288=5,16384=5")
    ap.add_argument("--depth", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-ppl", action="store_true")
    ap.add_argument("--no-passkey", action="store_true")
    ap.add_argument("--deadline-min", type=float, default=0.0,
                    help="start no new passkey cell after this many minutes (0 = no limit); skipped cells are listed")
    ap.add_argument("--partial", type=Path, default=None, help="rewrite the JSON here after each cell")
    ap.add_argument("--plot-dir", type=Path, default=None, help="write rope_ppl.png / passkey.png here")
    args = ap.parse_args()

    import torch

    from contextwindow.evaluate.positions import passkey_retrieval, perplexity_by_position
    from contextwindow.models import load_model
    from contextwindow.rope import rope_length, scale_rope

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, tokenizer = load_model(args.model)
    trained = int(model.config.max_position_embeddings)
    text = args.text.read_text(encoding="utf-8")
    ppl_methods = [m for m in args.ppl_methods.split(",") if m] if not args.no_ppl else []
    pk_methods = [m for m in args.passkey_methods.split(",") if m] if not args.no_passkey else []
    pk_lengths = [int(x) for x in args.passkey_lengths.split(",") if x]
    trials_at = parse_trials(args.trials, args.trials_at)
    max_new_tokens = 10

    result: dict[str, Any] = {
        "benchmark": "rope_scaling",
        "inputs": {
            "model": args.model or "smollm2-135m-instruct",
            "trained_context": trained,
            "rope_theta": model.config.rope_parameters.get("rope_theta"),
            "text": args.text.name,
            "length": args.length,
            "bucket": args.bucket,
            "factor": args.factor,
            "ppl_methods": ppl_methods,
            "passkey_methods": pk_methods,
            "passkey_lengths": pk_lengths,
            "passkey_trials": {str(L): trials_at.get(L, args.trials) for L in pk_lengths},
            "passkey_depth": args.depth,
            "seed": args.seed,
            "max_new_tokens": max_new_tokens,
            "threads": args.threads,
            "machine": f"{platform.machine()} {os.cpu_count()} cores, no GPU, torch {torch.__version__}",
            "dtype": str(next(model.parameters()).dtype),
        },
        "perplexity": {},
        "passkey": {},
    }

    def summarize() -> dict[str, Any]:
        ppl = result["perplexity"]
        summary: dict[str, Any] = {}
        if ppl:
            summary["median_bucket_ppl"] = {m: statistics.median(e["ppl"]) for m, e in ppl.items()}
            summary["last_over_first_bucket"] = {m: round(e["last_over_first"], 3) for m, e in ppl.items()}
            if "none" in ppl:
                in_range = [i for i, s in enumerate(ppl["none"]["starts"]) if s + args.bucket <= trained]
                base_in = [ppl["none"]["ppl"][i] for i in in_range]
                summary["in_range_ppl_ratio_vs_none"] = {
                    m: round(statistics.median([e["ppl"][i] / b for i, b in zip(in_range, base_in)]), 3)
                    for m, e in ppl.items()
                }
            targets = {}
            if "none" in ppl:
                targets["none_last_ge_5x_first"] = {
                    "value": round(ppl["none"]["last_over_first"], 3), "met": ppl["none"]["last_over_first"] >= 5,
                }
            for m in ("yarn", "dynamic"):
                if m in ppl:
                    targets[f"{m}_last_within_1.5x_first"] = {
                        "value": round(ppl[m]["last_over_first"], 3), "met": ppl[m]["last_over_first"] <= 1.5,
                    }
            summary["targets"] = targets
        if result["passkey"]:
            summary["passkey_accuracy"] = {
                m: {L: c.get("accuracy") for L, c in cells.items()} for m, cells in result["passkey"].items()
            }
            per_length: dict[str, list[float]] = {}
            for cells in result["passkey"].values():
                for L, c in cells.items():
                    if "s_per_trial" in c and "reused_from" not in c:
                        per_length.setdefault(L, []).append(c["s_per_trial"])
            summary["median_s_per_trial"] = {L: statistics.median(v) for L, v in sorted(per_length.items(), key=lambda kv: int(kv[0]))}
        summary["median_ppl_wall_s"] = statistics.median(e["wall_s"] for e in ppl.values()) if ppl else None
        summary["total_wall_s"] = round(time.perf_counter() - t0, 1)
        return summary

    def dump() -> None:
        if args.partial:
            result["summary"] = summarize()
            args.partial.write_text(json.dumps(result, indent=1))

    def apply(method: str) -> dict[str, Any]:
        if method == "none":
            return scale_rope(model, "none")
        return scale_rope(model, method, args.factor)

    # ---- perplexity per position bucket -------------------------------------------------
    for method in ppl_methods:
        params = apply(method)
        log(f"perplexity {method} x{args.factor} at {args.length} tokens ...")
        start = time.perf_counter()
        with PeakRSS() as mem:
            r = perplexity_by_position(model, tokenizer, text, args.length, args.bucket)
        wall = time.perf_counter() - start
        entry = r.as_dict()
        entry.update(
            rope_parameters=params,
            first_bucket_ppl=r.ppl[0],
            last_bucket_ppl=r.ppl[-1],
            last_over_first=r.ppl[-1] / r.ppl[0],
            wall_s=round(wall, 1),
            peak_rss_mib=round(mem.peak / 2**20),
        )
        result["perplexity"][method] = entry
        log(f"  {method}: buckets {[round(p, 1) for p in r.ppl]} ({wall:.0f} s, {mem.peak / 2**20:.0f} MiB)")
        dump()

    # ---- passkey --------------------------------------------------------------------------
    def fingerprint(length: int) -> tuple[bytes, float]:
        from contextwindow.models import rotary_embedding

        with rope_length(model, length):
            rot = rotary_embedding(model)
            return rot.inv_freq.detach().cpu().numpy().tobytes(), float(rot.attention_scaling)

    done: dict[tuple[int, tuple[bytes, float]], str] = {}
    for length in pk_lengths:
        n = trials_at.get(length, args.trials)
        for method in pk_methods:
            apply(method)
            cell = result["passkey"].setdefault(method, {})
            fp = fingerprint(length + max_new_tokens)
            if (length, fp) in done:
                # same frequencies at every position this cell reaches: the run would be identical
                src = done[(length, fp)]
                cell[str(length)] = dict(result["passkey"][src][str(length)], reused_from=src)
                log(f"passkey {method} {length}: identical RoPE state to {src}, result reused")
                dump()
                continue
            elapsed_min = (time.perf_counter() - t0) / 60
            if args.deadline_min and elapsed_min > args.deadline_min:
                cell[str(length)] = {"skipped": f"deadline ({args.deadline_min:g} min) passed"}
                result.setdefault("skipped", []).append(f"passkey {method} {length}")
                log(f"passkey {method} {length}: skipped, past the deadline")
                dump()
                continue
            log(f"passkey {method} x{args.factor} at {length} tokens, {n} trials ...")
            start = time.perf_counter()
            with PeakRSS() as mem:
                r = passkey_retrieval(
                    model, tokenizer, length, args.depth, n, seed=args.seed, max_new_tokens=max_new_tokens
                )
            wall = time.perf_counter() - start
            entry = r.as_dict()
            entry.update(wall_s=round(wall, 1), s_per_trial=round(wall / n, 1), peak_rss_mib=round(mem.peak / 2**20))
            cell[str(length)] = entry
            done[(length, fp)] = method
            log(f"  {method} {length}: {r.correct}/{n} ({wall:.0f} s) answers={list(r.answers)[:3]}")
            dump()
    scale_rope(model, "none")

    scale_rope(model, "none")
    result["summary"] = summarize()
    dump()

    if args.plot_dir:
        from contextwindow.cli.rope import plot_passkey, plot_perplexity

        args.plot_dir.mkdir(parents=True, exist_ok=True)
        if ppl:
            plot_perplexity(
                {m: (e["starts"], e["ppl"]) for m, e in ppl.items()},
                args.plot_dir / "rope_ppl.png",
                title=f"SmolLM2-135M (trained {trained}), Emma, factor {args.factor:g}",
                trained=trained,
            )
        if result["passkey"]:
            plot_passkey(
                {
                    m: {int(L): c["accuracy"] for L, c in cells.items() if "accuracy" in c}
                    for m, cells in result["passkey"].items()
                },
                args.plot_dir / "passkey.png",
                title=f"Passkey accuracy (depth {args.depth:g}, factor {args.factor:g})",
            )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
