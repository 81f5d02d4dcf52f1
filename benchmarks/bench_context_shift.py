"""StreamingLLM's sinks + window next to llama.cpp's context shift, on the same GGUF and text.

Prints ONE JSON object on stdout (progress on stderr) and writes the plot.

llama.cpp's answer to a stream longer than its context is the *context shift* (``n_keep`` +
discard): when the context is full it keeps the first ``n_keep`` cells, drops half of the rest
and moves the other half down, re-rotating their keys -- sinks + window, evicted half a window at
a time. Our ``SinkCache`` evicts token by token. Both run here at the same KV budget (at most
``budget`` cells held at any moment: llama.cpp's ``n_ctx``; ``sinks + window + chunk`` for the
sink cache, whose chunk is attended on top of what it keeps), each also without its first tokens
kept (``n_keep=0``, ``sinks=0``), and each engine's dense run over the whole text (it fits in the
trained length) is the reference. llama.cpp runs in its own venv through
``benchmarks/llamacpp_context_shift.py`` (``CONTEXTWINDOW_LLAMA_PYTHON``, default
``.venv-llama/bin/python``), on the quantised GGUF; transformers on the same GGUF dequantised to
fp32, so the dense runs also measure the gap between the two engines.

    python benchmarks/bench_context_shift.py              # 8,192 tokens, budgets 1,024 and 2,048
    python benchmarks/bench_context_shift.py --tokens 2048 --budgets 512 --out - --plot /tmp/c.png
    # split over two processes, then merge (the last run reuses every saved run)
    python benchmarks/bench_context_shift.py --budgets 1024 --partial DIR --out - &
    python benchmarks/bench_context_shift.py --budgets 2048 --skip-dense --partial DIR --out -
    python benchmarks/bench_context_shift.py --partial DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_out_argument, emit, log, machine, provenance

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = ROOT.parent / "shared" / "corpora" / "austen_emma.txt"
RUNNER = Path(__file__).resolve().parent / "llamacpp_context_shift.py"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    p.add_argument("--tokens", type=int, default=8192, help="stream length")
    p.add_argument("--budgets", default="1024,2048", help="KV cells (multiples of 256)")
    p.add_argument("--chunk", type=int, default=64, help="tokens per forward / llama_decode")
    p.add_argument("--sinks", type=int, default=4, help="sinks, and llama.cpp's n_keep")
    p.add_argument("--bucket", type=int, default=1024, help="tokens per perplexity bucket")
    p.add_argument("--threads", type=int, default=1, help="threads of each engine")
    p.add_argument("--skip-dense", action="store_true", help="leave out both dense runs")
    p.add_argument("--partial", type=Path, help="a folder: each finished run is saved there and "
                   "reused by a later run on the same inputs")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "context_shift.png")
    add_out_argument(p, "bench_context_shift")
    return p.parse_args()


def llama_python() -> str:
    python = os.environ.get("CONTEXTWINDOW_LLAMA_PYTHON") or str(ROOT / ".venv-llama/bin/python")
    if not Path(python).is_file():
        raise SystemExit(f"no llama.cpp interpreter at {python} (set CONTEXTWINDOW_LLAMA_PYTHON)")
    return python


def llama_stream(job: dict[str, Any], label: str) -> dict[str, Any]:
    """The llama.cpp runner's JSON for ``job``."""
    done = subprocess.run([llama_python(), str(RUNNER)], input=json.dumps(job), text=True,
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"llama.cpp runner failed ({label}): {done.stderr.strip()[-2000:]}")
    return dict(json.loads(done.stdout))


def cached(partial: Path | None, key: dict[str, Any],
           compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One contender's raw result (``nll``, ``positions``, ``seconds``, llama.cpp's ``shifts``),
    read from ``partial`` when a run on the same inputs saved it there, else computed and saved:
    runs can be split over processes (``--budgets``) and merged by a last run that reuses all."""
    if partial is None:
        return compute()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = partial / f"{digest}.json"
    if path.is_file():
        log(f"  reused {path}")
        return dict(json.loads(path.read_text(encoding="utf-8")))
    raw = compute()
    partial.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(raw), encoding="utf-8")
    tmp.replace(path)
    return raw


def sink_context(total: int, chunk: int, capacity: int) -> list[int]:
    """Tokens each scored token attends to (itself included) through a sink cache of
    ``capacity`` slots fed ``chunk`` tokens at a time: what it holds, plus the chunk so far."""
    return [min(start, capacity) + j + 1
            for start in range(0, total - 1, chunk)
            for j in range(min(chunk, total - 1 - start))]


def llama_context(raw: dict[str, Any], total: int, chunk: int) -> list[int]:
    """The same for the llama.cpp run: the cells before each decode (after any shift), plus the
    batch so far, replayed from the runner's shift log."""
    shifts = {s["at"]: s["n_discard"] for s in raw["shifts"]}
    out, n_past = [], 0
    for start in range(0, total - 1, chunk):
        n_past -= shifts.get(start, 0)
        size = min(chunk, total - 1 - start)
        out.extend(n_past + j + 1 for j in range(size))
        n_past += size
    return out


def context_stats(seen: list[int], budget: int) -> dict[str, Any]:
    """Mean, min and max of the tokens attended, from the first time the budget is full (the
    stream index ``budget``) on; the max is also the most cells held at once."""
    after = seen[budget:]
    return {"mean": r(sum(after) / len(after), 1), "min": min(after),
            "max": max(seen)} if after else {}


def budget_ratios(results: dict[str, Any], keyed: dict[str, str],
                  per_bucket: dict[str, list[float | None]]) -> dict[str, Any]:
    """The contenders of one budget against each other."""
    res = {kind: results[label] for kind, label in keyed.items()}
    return {
        "shift_keep_over_sinks": r(res["shift_keep"].ppl / res["sinks"].ppl),
        "shift_zero_over_shift_keep": r(res["shift_zero"].ppl / res["shift_keep"].ppl),
        "window_over_sinks": r(res["window"].ppl / res["sinks"].ppl),
        "shift_keep_over_sinks_per_bucket": [
            r(a / b) if a and b else None
            for a, b in zip(per_bucket[keyed["shift_keep"]], per_bucket[keyed["sinks"]])],
    }


def engine_gap(results: dict[str, Any], first_shift: dict[str, int]) -> dict[str, Any]:
    """llama.cpp against transformers on the same GGUF, both dense; and whether every shifted
    llama.cpp run scored exactly the dense llama.cpp NLLs until its first shift (the shift is
    then the only difference between the runner's two modes)."""
    theirs, ours = results["dense llama.cpp"], results["dense transformers"]
    diffs = sorted(abs(x - y) for x, y in zip(theirs.nll, ours.nll))
    return {"llama_over_transformers_ppl": r(theirs.ppl / ours.ppl, 4),
            "mean_abs_nll_diff": r(sum(diffs) / len(diffs), 4),
            "median_abs_nll_diff": r(diffs[len(diffs) // 2], 4),
            "max_abs_nll_diff": r(diffs[-1], 3),
            "shift_runs_equal_dense_before_first_shift": all(
                results[label].nll[:first] == theirs.nll[:first]
                for label, first in first_shift.items())}


def r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


def plot(per_bucket: dict[str, dict[str, list[float | None]]], buckets: list[list[int]],
         path: Path, title: str) -> None:
    """Perplexity per bucket, one panel per budget, the dense runs in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_bucket), figsize=(6 * len(per_bucket), 4.4), dpi=110,
                             sharey=True, squeeze=False)
    for ax, (budget, runs) in zip(axes[0], per_bucket.items()):
        for label, values in runs.items():
            xs = [(lo + hi) / 2 for (lo, hi), v in zip(buckets, values) if v is not None]
            ys = [v for v in values if v is not None]
            style = "--" if label.startswith("dense") else "-"
            ax.plot(xs, ys, style, marker="o", markersize=3, linewidth=1.3, label=label)
        ax.set_title(f"budget {budget} KV cells")
        ax.set_xlabel("token position in the stream")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"perplexity per {buckets[0][1]}-token bucket")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    import torch
    import transformers

    from contextwindow.evaluate.streaming import StreamResult, encode_text, streaming_perplexity
    from contextwindow.kv import SinkCache
    from contextwindow.models import load_model
    from contextwindow.models.loading import part_paths
    from contextwindow.models.registry import MODELS

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    budgets = [int(x) for x in args.budgets.split(",") if x.strip()]
    model, tokenizer = load_model()
    gguf = str(part_paths(MODELS["smollm2-135m"])[0])
    trained = model.config.max_position_embeddings
    ids = encode_text(tokenizer, args.text.read_text(encoding="utf-8"), args.tokens).tolist()
    total = len(ids)
    log(f"{total} tokens of {args.text.name}; budgets {budgets}; trained length {trained}")
    job = {"model": gguf, "tokens": ids, "batch": args.chunk, "threads": args.threads}

    results: dict[str, Any] = {}
    context: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, str]] = {}
    shifts: dict[str, Any] = {}
    first_shift: dict[str, int] = {}

    key = {"tokens": hashlib.sha256(json.dumps(ids).encode()).hexdigest(), "chunk": args.chunk,
           "gguf": Path(gguf).name}

    def record(label: str, raw: dict[str, Any]) -> dict[str, Any]:
        results[label] = StreamResult(label=label, positions=raw["positions"], nll=raw["nll"],
                                      seconds=raw["seconds"])
        log(f"  ppl {results[label].ppl:.2f} in {results[label].seconds:.0f}s")
        return raw

    def ours(label: str, make: Callable[[], Any]) -> None:
        log(f"transformers: {label}")

        def compute() -> dict[str, Any]:
            res = streaming_perplexity(model, None, ids, cache=make(), chunk=args.chunk)
            return {"nll": res.nll, "positions": res.positions, "seconds": res.seconds}

        record(label, cached(args.partial, {**key, "label": label}, compute))

    def theirs(label: str, **options: Any) -> dict[str, Any]:
        log(f"llama.cpp: {label}")
        raw = cached(args.partial, {**key, "label": label},
                     lambda: llama_stream({**job, **options}, label))
        return record(label, raw)

    for budget in budgets:
        window = budget - args.chunk
        sink_label = f"SinkCache {args.sinks}+{window - args.sinks}"
        plain_label = f"SinkCache 0+{window}"
        keep_label = f"llama.cpp shift n_keep={args.sinks}"
        zero_label = "llama.cpp shift n_keep=0"
        labels = {"sinks": sink_label, "window": plain_label,
                  "shift_keep": keep_label, "shift_zero": zero_label}
        keyed = {kind: f"{label} @{budget}" for kind, label in labels.items()}
        ours(keyed["sinks"],
             lambda w=window - args.sinks: SinkCache(model, sinks=args.sinks, window=w))
        ours(keyed["window"], lambda w=window: SinkCache(model, sinks=0, window=w))
        for kind, keep in (("shift_keep", args.sinks), ("shift_zero", 0)):
            raw = theirs(keyed[kind], n_ctx=budget, n_keep=keep, shift=True)
            shifts[keyed[kind]] = [s["n_discard"] for s in raw["shifts"]]
            first_shift[keyed[kind]] = raw["shifts"][0]["at"] if raw["shifts"] else total
            context[keyed[kind]] = context_stats(llama_context(raw, total, args.chunk), budget)
        for kind in ("sinks", "window"):
            context[keyed[kind]] = context_stats(sink_context(total, args.chunk, window), budget)
        runs[str(budget)] = keyed
    if not args.skip_dense:
        ours("dense transformers", lambda: None)
        dense_ctx = -(-total // 256) * 256
        theirs("dense llama.cpp", n_ctx=dense_ctx, shift=False)

    n_bucket = math.ceil(total / args.bucket)
    buckets = [[k * args.bucket, min((k + 1) * args.bucket, total)] for k in range(n_bucket)]
    per_bucket = {label: [r(v) for v in res.segment_ppl(args.bucket, total=total)]
                  for label, res in results.items()}
    dense_ratio: dict[str, float | None] = {}
    if not args.skip_dense:
        own = {"SinkCache": results["dense transformers"], "llama.cpp": results["dense llama.cpp"]}
        dense_ratio = {label: r(res.ppl / own[label.split()[0]].ppl)
                       for label, res in results.items() if not label.startswith("dense")}
    ratios = {budget: budget_ratios(results, keyed, per_bucket) for budget, keyed in runs.items()}
    gap = {} if args.skip_dense else engine_gap(results, first_shift)
    if runs:
        plot({budget: {label.removesuffix(f" @{budget}"): per_bucket[label]
                       for label in [*keyed.values(), *(["dense transformers", "dense llama.cpp"]
                                                         if not args.skip_dense else [])]}
              for budget, keyed in runs.items()},
             buckets, args.plot,
             f"SmolLM2-135M on {args.text.name}: {total} tokens, chunks of {args.chunk}")
    emit(
        {
            "benchmark": "context_shift",
            "machine": {**machine(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "threads": args.threads},
            "inputs": {
                "model": "SmolLM2-135M-Instruct: llama.cpp on the Q4_1 GGUF, transformers on "
                         "the same GGUF dequantised to fp32",
                "llama_cpp": json.loads(subprocess.run(
                    [llama_python(), "-c",
                     "import json, llama_cpp; print(json.dumps(llama_cpp.__version__))"],
                    capture_output=True, text=True, check=True).stdout),
                "text": args.text.name, "tokens": total, "trained_length": trained,
                "chunk": args.chunk, "sinks": args.sinks, "budgets": budgets,
                "bucket": args.bucket,
            },
            "runs": runs,
            "buckets": buckets,
            "ppl_per_bucket": per_bucket,
            "ppl_overall": {label: r(res.ppl) for label, res in results.items()},
            "over_own_dense": dense_ratio,
            "ratios": ratios,
            "engine_gap_dense": gap,
            "context_tokens": context,
            "llama_discards": shifts,
            "seconds": {label: r(res.seconds, 1) for label, res in results.items()},
            "seconds_runs_sum": r(sum(res.seconds for res in results.values()), 1),
            "plot": str(args.plot.relative_to(ROOT) if args.plot.is_relative_to(ROOT)
                        else args.plot),
            "seconds_total": r(time.perf_counter() - started, 1),
            **provenance(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
