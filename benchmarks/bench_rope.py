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
from typing import Any, Self

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

    def __enter__(self) -> Self:
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def parse_trials(default: int, spec: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        length, _, n = part.partition("=")
        out[int(length)] = int(n)
    return out


def summarize(result: dict[str, Any], bucket: int, trained: int, t0: float) -> dict[str, Any]:
    ppl = result["perplexity"]
    summary: dict[str, Any] = {}
    if ppl:
        summary["median_bucket_ppl"] = {m: statistics.median(e["ppl"]) for m, e in ppl.items()}
        summary["last_over_first_bucket"] = {
            m: round(e["last_over_first"], 3) for m, e in ppl.items()
        }
        if "none" in ppl:
            in_range = [i for i, s in enumerate(ppl["none"]["starts"]) if s + bucket <= trained]
            base_in = [ppl["none"]["ppl"][i] for i in in_range]
            summary["in_range_ppl_ratio_vs_none"] = {
                m: round(statistics.median([e["ppl"][i] / b for i, b in zip(in_range, base_in)]), 3)
                for m, e in ppl.items()
            }
        targets = {}
        if "none" in ppl:
            targets["none_last_ge_5x_first"] = {
                "value": round(ppl["none"]["last_over_first"], 3),
                "met": ppl["none"]["last_over_first"] >= 5,
            }
        for m in ("yarn", "dynamic"):
            if m in ppl:
                targets[f"{m}_last_within_1.5x_first"] = {
                    "value": round(ppl[m]["last_over_first"], 3),
                    "met": ppl[m]["last_over_first"] <= 1.5,
                }
        summary["targets"] = targets
    if result["passkey"]:
        summary["passkey_accuracy"] = {
            m: {L: c.get("accuracy") for L, c in cells.items()}
            for m, cells in result["passkey"].items()
        }
        per_length: dict[str, list[float]] = {}
        for cells in result["passkey"].values():
            for L, c in cells.items():
                if "s_per_trial" in c and "reused_from" not in c:
                    per_length.setdefault(L, []).append(c["s_per_trial"])
        summary["median_s_per_trial"] = {
            L: statistics.median(v)
            for L, v in sorted(per_length.items(), key=lambda kv: int(kv[0]))
        }
    summary["median_ppl_wall_s"] = (
        statistics.median(e["wall_s"] for e in ppl.values()) if ppl else None
    )
    summary["total_wall_s"] = round(time.time() - t0, 1)
    return summary


PPL_INPUTS = ("model", "text", "length", "bucket", "factor")
PASSKEY_INPUTS = ("model", "factor", "passkey_depth", "seed", "max_new_tokens")


def load_previous(
    paths: list[Path], inputs: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Finished perplexity entries and passkey cells of earlier runs whose inputs match each
    half."""
    ppl: dict[str, Any] = {}
    passkey: dict[str, dict[str, Any]] = {}
    for path in paths:
        old = json.loads(path.read_text())
        if all(old["inputs"].get(k) == inputs.get(k) for k in PPL_INPUTS):
            ppl.update(old.get("perplexity", {}))
        if all(old["inputs"].get(k) == inputs.get(k) for k in PASSKEY_INPUTS):
            for method, cells in old.get("passkey", {}).items():
                for length, cell in cells.items():
                    if "accuracy" in cell:
                        passkey.setdefault(method, {})[length] = cell
    return ppl, passkey


def make_plots(result: dict[str, Any], plot_dir: Path) -> None:
    from contextwindow.evaluate.report import plot_passkey, plot_perplexity

    inputs = result["inputs"]
    trained, factor, depth = inputs["trained_context"], inputs["factor"], inputs["passkey_depth"]

    plot_dir.mkdir(parents=True, exist_ok=True)
    ppl = result["perplexity"]
    if ppl:
        plot_perplexity(
            {m: (e["starts"], e["ppl"]) for m, e in ppl.items()},
            plot_dir / "rope_ppl.png",
            title=f"{inputs['model']} (trained {trained}), {inputs['text']}, factor {factor:g}",
            trained=trained,
        )
    if result["passkey"]:
        plot_passkey(
            {
                m: {int(L): c["accuracy"] for L, c in cells.items() if "accuracy" in c}
                for m, cells in result["passkey"].items()
            },
            plot_dir / "passkey.png",
            counts={
                m: {
                    int(L): (c["correct"], c["trials"]) for L, c in cells.items() if "accuracy" in c
                }
                for m, cells in result["passkey"].items()
            },
            title=f"Passkey accuracy, {inputs['model']} (depth {depth:g}, factor {factor:g})",
        )


def run_two_workers(args: argparse.Namespace) -> int:
    """Run the perplexity and the passkey halves as two child processes; merge their JSON."""
    import subprocess

    t0 = time.time()
    base = [sys.executable, __file__, "--workers", "1", "--start-time", repr(t0)]
    skip = {"--workers", "--plot-dir", "--partial", "--start-time"}
    argv = sys.argv[1:]
    passthrough: list[str] = []
    i = 0
    while i < len(argv):
        flag = argv[i].split("=")[0]
        takes_value = "=" not in argv[i] and flag not in ("--no-ppl", "--no-passkey")
        if flag in skip:
            i += 2 if takes_value else 1
            continue
        passthrough += argv[i : i + (2 if takes_value else 1)]
        i += 2 if takes_value else 1
    children = {}
    for half, flag in (("ppl", "--no-passkey"), ("passkey", "--no-ppl")):
        cmd = base + passthrough + [flag]
        if args.partial:
            cmd += ["--partial", f"{args.partial}.{half}"]
        children[half] = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    outputs = {half: json.loads(p.communicate()[0]) for half, p in children.items()}
    if any(p.returncode for p in children.values()):
        log("a worker failed")
        return 1
    result = outputs["ppl"]
    result["passkey"] = outputs["passkey"]["passkey"]
    for key in ("passkey_methods", "passkey_lengths", "passkey_trials"):
        result["inputs"][key] = outputs["passkey"]["inputs"][key]
    result["inputs"]["workers"] = 2
    if "skipped" in outputs["passkey"]:
        result["skipped"] = outputs["passkey"]["skipped"]
    result["summary"] = summarize(result, args.bucket, result["inputs"]["trained_context"], t0)
    if args.partial:
        args.partial.write_text(json.dumps(result, indent=1))
    if args.plot_dir:
        make_plots(result, args.plot_dir)
    print(json.dumps(result))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model", default=None, help="local model dir (default: SmolLM2-135M-Instruct)"
    )
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
    ap.add_argument(
        "--deadline-min",
        type=float,
        default=0.0,
        help="start no new passkey cell after this many minutes (0 = no limit); "
        "skipped cells are listed",
    )
    ap.add_argument(
        "--partial", type=Path, default=None, help="rewrite the JSON here after each cell"
    )
    ap.add_argument(
        "--plot-dir", type=Path, default=None, help="write rope_ppl.png / passkey.png here"
    )
    ap.add_argument("--workers", type=int, default=1, choices=(1, 2),
                    help="2: run perplexity and passkey in two processes of --threads threads each")
    ap.add_argument("--start-time", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--resume",
        type=Path,
        action="append",
        default=[],
        help="reuse finished cells from an earlier run's JSON (same inputs); repeatable",
    )
    args = ap.parse_args()
    if args.workers == 2 and not args.no_ppl and not args.no_passkey:
        return run_two_workers(args)

    import torch

    from contextwindow.evaluate.passkey import passkey_retrieval
    from contextwindow.evaluate.positions import perplexity_by_position
    from contextwindow.models import load_model
    from contextwindow.rope import RESTORE_METHODS, rope_length, scale_rope

    torch.set_num_threads(args.threads)
    t0 = args.start_time or time.time()
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
            "model": args.model or "smollm2-135m",
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
            "machine": f"{platform.machine()} {os.cpu_count()} cores, no GPU, "
            f"torch {torch.__version__}",
            "dtype": str(next(model.parameters()).dtype),
        },
        "perplexity": {},
        "passkey": {},
    }

    def dump() -> None:
        if args.partial:
            result["summary"] = summarize(result, args.bucket, trained, t0)
            args.partial.write_text(json.dumps(result, indent=1))

    def apply(method: str) -> dict[str, Any]:
        if method in RESTORE_METHODS:
            return scale_rope(model, "none")
        return scale_rope(model, method, args.factor)

    # ---- perplexity per position bucket -------------------------------------------------
    previous_ppl, previous_pk = load_previous(args.resume, result["inputs"])
    for method in ppl_methods:
        if method in previous_ppl:
            result["perplexity"][method] = dict(previous_ppl[method], resumed=True)
            log(f"perplexity {method}: reused from an earlier run")
            dump()
            continue
        if args.deadline_min and (time.time() - t0) / 60 > args.deadline_min:
            result.setdefault("skipped", []).append(f"perplexity {method}")
            log(f"perplexity {method}: skipped, past the deadline")
            continue
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
        log(
            f"  {method}: buckets {[round(p, 1) for p in r.ppl]} "
            f"({wall:.0f} s, {mem.peak / 2**20:.0f} MiB)"
        )
        dump()

    # ---- passkey --------------------------------------------------------------------------
    def fingerprint(length: int) -> tuple[bytes, float, str]:
        from contextwindow.models import rotary_embedding
        from contextwindow.rope import applied_scaling, get_extension

        applied = applied_scaling(model) or {}
        # Self-Extend / DCA keep the frequencies: their attention is what differs
        extension = repr(applied) if get_extension(applied.get("method")) else ""
        with rope_length(model, length):
            rot = rotary_embedding(model)
            return (rot.inv_freq.detach().cpu().numpy().tobytes(), float(rot.attention_scaling),
                    extension)

    done: dict[tuple[int, tuple[bytes, float, str]], str] = {}
    for length in pk_lengths:
        n = trials_at.get(length, args.trials)
        for method in pk_methods:
            cell = result["passkey"].setdefault(method, {})
            earlier = previous_pk.get(method, {}).get(str(length))
            if earlier is not None and earlier.get("trials") == n and "reused_from" not in earlier:
                cell[str(length)] = dict(earlier, resumed=True)
                log(f"passkey {method} {length}: reused from an earlier run")
                apply(method)
                done[(length, fingerprint(length + max_new_tokens))] = method
                dump()
                continue
            apply(method)
            fp = fingerprint(length + max_new_tokens)
            if (length, fp) in done:
                # same frequencies at every position this cell reaches: the run would be identical
                src = done[(length, fp)]
                cell[str(length)] = dict(result["passkey"][src][str(length)], reused_from=src)
                log(f"passkey {method} {length}: identical RoPE state to {src}, result reused")
                dump()
                continue
            elapsed_min = (time.time() - t0) / 60
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
                    model,
                    tokenizer,
                    length,
                    args.depth,
                    n,
                    seed=args.seed,
                    max_new_tokens=max_new_tokens,
                )
            wall = time.perf_counter() - start
            entry = r.as_dict()
            entry.update(
                wall_s=round(wall, 1),
                s_per_trial=round(wall / n, 1),
                peak_rss_mib=round(mem.peak / 2**20),
            )
            cell[str(length)] = entry
            done[(length, fp)] = method
            log(
                f"  {method} {length}: {r.correct}/{n} ({wall:.0f} s) answers={list(r.answers)[:3]}"
            )
            dump()
    scale_rope(model, "none")
    result["summary"] = summarize(result, args.bucket, trained, t0)
    dump()

    if args.plot_dir:
        make_plots(result, args.plot_dir)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
