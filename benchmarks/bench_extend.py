"""Self-Extend and Dual Chunk Attention beside the RoPE methods at 4x the trained length.

SmolLM2-135M-Instruct (trained 8,192), every method at factor 4 (32,768 tokens), side by side in
ONE JSON (docs/results/bench_extend.json; progress on stderr) with plots in docs/img/:

* **perplexity** per 2,048-token bucket over 32,768 tokens of Emma, and **passkey** retrieval
  (bench_rope's filler and keys, the shared prefix prefilled once) at depth 0.9 and 0.5, in range
  (4k, 8k) and past it (16k, 32k; fewer keys at 32k depth 0.5). Each is a bench_rope.py run in a
  child process, so it keeps bench_rope's --partial / --resume machinery: every finished cell is
  written at once to a part file under --work, and a later run reuses it. Subsets (fewer methods
  or lengths) go to their own part files, so runs can be split and run in parallel;
* **prefill cost**: one attention layer of SmolLM2's shape (9 heads, 3 KV heads, head dim 64) at
  8k / 16k / 32k, SDPA (what every frequency method runs) against Self-Extend and DCA, interleaved
  rounds; and the peak memory above the inputs, one child process per cell.

    nice -n 10 python benchmarks/bench_extend.py --threads 1   # everything: many hours
    python benchmarks/bench_extend.py --parts passkey0.9 --passkey-lengths 32768 \\
        --passkey-methods self-extend,dca --threads 1    # one subset, resumable
    python benchmarks/bench_extend.py --merge            # JSON + plots from what finished

The JSON is merged, never replaced: the part files' cells are laid over the results already at
--out, so a subset run on a fresh clone (no earlier part files) adds to the committed figures;
each cell it adds or changes is listed under ``reruns`` with its command, date and commit.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, emit, interleaved, log, machine, provenance, spread
from bench_rope import DEFAULT_TEXT, PeakRSS

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
EXTENSIONS = ("self-extend", "dca")
DEPTHS = ("0.9", "0.5")
PARTS = ("ppl", "passkey0.9", "passkey0.5", "prefill")


def default_work() -> Path:
    cache = os.environ.get("CONTEXTWINDOW_CACHE") or Path.home() / ".cache" / "contextwindow"
    return Path(cache) / "bench_extend"


# --- the bench_rope parts --------------------------------------------------------------------


def part_command(part: str, args: argparse.Namespace, partial: Path) -> list[str]:
    """The bench_rope.py command of ``part``, resuming from every earlier file of that part."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_rope.py"), "--factor",
           str(args.factor), "--threads", str(args.threads), "--text", str(args.text),
           "--partial", str(partial)]
    for earlier in sorted(args.work.glob(f"{part}.*.json")):
        cmd += ["--resume", str(earlier)]
    if part == "ppl":
        return cmd + ["--no-passkey", "--length", str(args.length), "--bucket", "2048",
                      "--ppl-methods", args.ppl_methods]
    depth = part.removeprefix("passkey")
    trials_at = args.trials_at_05 if depth == "0.5" else ""
    return cmd + ["--no-ppl", "--depth", depth, "--passkey-lengths", args.passkey_lengths,
                  "--passkey-methods", args.passkey_methods, "--trials", str(args.trials),
                  "--trials-at", trials_at]


def run_part(part: str, args: argparse.Namespace) -> None:
    subset = "|".join((args.ppl_methods, str(args.length)) if part == "ppl" else
                      (args.passkey_methods, args.passkey_lengths, args.trials_at_05))
    tag = hashlib.sha1(subset.encode()).hexdigest()[:8]
    partial = args.work / f"{part}.{tag}.json"
    cmd = part_command(part, args, partial)
    log(f"{part}: {' '.join(cmd[1:])}")
    prefix = ["nice", "-n", str(args.nice)] if args.nice else []
    subprocess.run([*prefix, *cmd], check=True, stdout=subprocess.DEVNULL)


def load_parts(work: Path, part: str) -> list[dict[str, Any]]:
    """Every part file of ``part``, oldest first (later cells win)."""
    files = sorted(work.glob(f"{part}.*.json"), key=lambda p: p.stat().st_mtime)
    return [json.loads(f.read_text()) for f in files]


# --- prefill cost ------------------------------------------------------------------------------


def attention_inputs(length: int) -> dict[str, Any]:
    """The three contenders on random q, k, v of one SmolLM2 layer at ``length`` tokens."""
    import torch

    from contextwindow.models import load_model, rotary_embedding
    from contextwindow.rope import plan_extension
    from contextwindow.rope.extended_attention import ExtendedState, extended_forward

    model, _ = load_model()
    cfg = model.config
    inv_freq = rotary_embedding(model).inv_freq
    trained = int(cfg.max_position_embeddings)
    del model
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, cfg.num_attention_heads, length, cfg.head_dim, generator=g)
    k = torch.randn(1, cfg.num_key_value_heads, length, cfg.head_dim, generator=g)
    v = torch.randn(1, cfg.num_key_value_heads, length, cfg.head_dim, generator=g)
    scale = cfg.head_dim**-0.5

    def sdpa() -> Any:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                enable_gqa=True, scale=scale)

    contenders = {"sdpa": sdpa}
    for method in EXTENSIONS:
        state = ExtendedState(plan_extension(method, trained, 4.0, {}).map, inv_freq)
        contenders[method] = functools.partial(extended_forward, state, q, k, v, 0, scale)
    return contenders


def memory_probe(method: str, length: int) -> None:
    """Child process: peak RSS above the inputs of one call (printed as JSON)."""
    contenders = attention_inputs(length)
    with PeakRSS() as mem:  # a first call: the rotation tables count too
        base = mem.peak
        start = time.perf_counter()
        contenders[method]()
        seconds = time.perf_counter() - start
    print(json.dumps({"peak_above_inputs_mib": round((mem.peak - base) / 2**20, 1),
                      "seconds": round(seconds, 2)}))


def run_prefill(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    path = args.work / "prefill.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    for length in (int(x) for x in args.prefill_lengths.split(",")):
        if str(length) in done:
            continue
        log(f"prefill: one attention layer at {length} tokens, {args.rounds} rounds ...")
        contenders = attention_inputs(length)
        times = interleaved(contenders, args.rounds)
        cell = {m: spread(t) for m, t in times.items()}
        for method in contenders:
            probe = [sys.executable, __file__, "--memory-probe", method, str(length),
                     "--threads", str(args.threads)]
            out = subprocess.run(probe, check=True, capture_output=True, text=True).stdout
            cell[method]["peak_above_inputs_mib"] = json.loads(out)["peak_above_inputs_mib"]
        for method in EXTENSIONS:
            cell[method]["over_sdpa"] = round(cell[method]["median"] / cell["sdpa"]["median"], 3)
        done[str(length)] = cell
        path.write_text(json.dumps(done, indent=1))
        log(f"  {length}: " + ", ".join(f"{m} {c['median']} s" for m, c in cell.items()))


# --- merging, goals, plots ---------------------------------------------------------------------


def merge(args: argparse.Namespace) -> dict[str, Any]:
    """One result: the one at ``--out`` if there is one, with every part file that exists laid
    over it. A part run on a machine without the earlier part files (a fresh clone) so adds its
    cells to the committed results instead of replacing them; each cell it adds or changes is
    listed under ``reruns`` with this run's command, date and commit."""
    run = provenance()
    result: dict[str, Any] = {"benchmark": "context_extension", **run, "machine": machine(),
                              "perplexity": {}, "passkey": {d: {} for d in DEPTHS},
                              "prefill": {}}
    earlier = json.loads(args.out.read_text()) if args.out.exists() else {}
    for key in ("commit", "date", "command", "machine", "perplexity", "prefill", "reruns"):
        if key in earlier:  # the run the results come from, and what it measured
            result[key] = earlier[key]
    for depth, methods in earlier.get("passkey", {}).items():
        result["passkey"][depth] = {m: dict(cells) for m, cells in methods.items()}
    inputs: dict[str, Any] = dict(earlier.get("inputs", {}))
    for old in load_parts(args.work, "ppl"):
        inputs.update({k: v for k, v in old["inputs"].items() if not k.startswith("passkey")})
        result["perplexity"].update(old["perplexity"])
    for depth in DEPTHS:
        for old in load_parts(args.work, f"passkey{depth}"):
            inputs.setdefault("passkey_trials", {}).update(
                {f"{L} depth {depth}": n for L, n in old["inputs"]["passkey_trials"].items()})
            for method, cells in old["passkey"].items():
                finished = {L: c for L, c in cells.items() if "correct" in c}
                known = earlier.get("passkey", {}).get(depth, {}).get(method, {})
                for length, cell in finished.items():
                    if known.get(length) != cell:
                        result.setdefault("reruns", {})[f"{method} {length} depth {depth}"] = {
                            k: run[k] for k in ("command", "date", "commit")}
                result["passkey"][depth].setdefault(method, {}).update(finished)
    prefill = args.work / "prefill.json"
    if prefill.exists():
        result["prefill"] = json.loads(prefill.read_text())
    inputs.update(model="smollm2-135m", factor=args.factor, threads=args.threads,
                  prefill="one attention layer (9 heads, 3 KV heads, head dim 64), fp32, "
                  f"{args.rounds} interleaved rounds; frequency methods run SDPA")
    result["inputs"] = inputs
    result["summary"] = goals(result)
    return result


def _correct(result: dict[str, Any], depth: str, method: str, length: int) -> int | None:
    cell = result["passkey"][depth].get(method, {}).get(str(length))
    return cell["correct"] if cell else None


def _attention_side(result: dict[str, Any], depth: str) -> list[str]:
    """The attention-side methods with passkey cells at ``depth``: the two of the issue, and
    any other the registry has (``self-extend-dynamic``), in the registry's order."""
    from contextwindow.rope import available_extensions

    return [m for m in available_extensions() if m in EXTENSIONS or m in result["passkey"][depth]]


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, each with its figures and whether it is met (None: not measured)."""
    def best(depth: str, length: int) -> dict[str, Any]:
        methods = _attention_side(result, depth)
        got = {m: _correct(result, depth, m, length) for m in methods}
        measured = [c for c in got.values() if c is not None]
        others = {m: _correct(result, depth, m, length) for m in result["passkey"][depth]
                  if m not in methods}
        return {"correct": got, "beside": others,
                "met": max(measured) >= 9 if measured else None}

    in_range: dict[str, Any] = {}
    met_by: dict[str, bool] = {}
    for depth in DEPTHS:
        for length in (4096, 8192):
            base = _correct(result, depth, "none", length)
            for method in _attention_side(result, depth):
                got = _correct(result, depth, method, length)
                if got is not None and base is not None:
                    in_range[f"{method} {length} depth {depth}"] = {
                        "correct": got, "none": base, "met": got >= base}
                    met_by[method] = met_by.get(method, True) and got >= base
    ppl = {m: round(e["last_over_first"], 3) for m, e in result["perplexity"].items()}
    prefill = result["prefill"]
    ratios = {L: {m: c[m]["over_sdpa"] for m in EXTENSIONS} for L, c in prefill.items()}
    memory = {m: {L: c[m]["peak_above_inputs_mib"] for L, c in prefill.items()}
              for m in ("sdpa", *EXTENSIONS) if prefill}
    return {
        "passkey_32k_depth0.9_extension_ge_9_of_10": best("0.9", 32768),
        "passkey_16k_depth0.5_extension_ge_9_of_10": best("0.5", 16384),
        "in_range_never_below_none": {"cells": in_range, "met_by": met_by, "met": all(
            c["met"] for c in in_range.values()) if in_range else None},
        "ppl_last_over_first_le_1.3": {"value": ppl, "met": all(
            ppl[m] <= 1.3 for m in EXTENSIONS) if all(m in ppl for m in EXTENSIONS) else None},
        "prefill_attention_le_1.5x_sdpa": {"value": ratios, "met": all(
            r <= 1.5 for cell in ratios.values() for r in cell.values()) if ratios else None},
        "peak_memory_mib_by_length": {"value": memory, "met": _linear(memory)},
    }


def _linear(memory: dict[str, dict[str, float]]) -> bool | None:
    """Doubling the length at most doubles the memory above the inputs (plus 25 %)."""
    pairs = [(cells[a], cells[b]) for cells in memory.values() for a, b in
             zip(sorted(cells, key=int), sorted(cells, key=int)[1:])]
    return all(hi <= 2.5 * max(lo, 1.0) for lo, hi in pairs) if pairs else None


def plot(result: dict[str, Any], img: Path) -> None:
    from contextwindow.evaluate.report import plot_passkey, plot_perplexity

    trained = 8192
    if result["perplexity"]:
        plot_perplexity({m: (e["starts"], e["ppl"]) for m, e in result["perplexity"].items()},
                        img / "extend_ppl.png", trained=trained,
                        title="SmolLM2-135M (trained 8,192), Emma, factor 4")
    rows = {f"{m} @ {d}": cells for d in DEPTHS for m, cells in result["passkey"][d].items()}
    if rows:
        plot_passkey({r: {int(L): c["accuracy"] for L, c in cells.items()}
                      for r, cells in rows.items()}, img / "extend_passkey.png",
                     counts={r: {int(L): (c["correct"], c["trials"]) for L, c in cells.items()}
                             for r, cells in rows.items()},
                     title="Passkey, factor 4 (method @ depth)")
    plot_position_maps(img / "extend_positions.png", trained=trained, length=4 * trained)


def plot_position_maps(path: Path, *, trained: int, length: int) -> None:
    """The distance RoPE sees for every (query, key) pair of a ``length``-token sequence: plain
    RoPE and each attention-side method (Self-Extend, its dynamic variant, DCA) with the
    parameters chosen for it (every 128th position)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from contextwindow.rope import available_extensions, plan_extension

    grid = torch.arange(0, length, 128)
    i, j = grid[:, None], grid[None]
    last, keys = torch.tensor([[length - 1]]), torch.arange(length)[None]  # the farthest row
    plain = "none\n(RoPE as trained)"
    maps, largest = {plain: i - j}, {plain: length - 1}
    for method in available_extensions():
        plan = plan_extension(method, trained, length / trained, {})
        name = f"{method}\n({', '.join(f'{k}={v}' for k, v in plan.params.items())})"
        maps[name] = plan.map.relative(i, j)
        largest[name] = int(plan.map.relative(last, keys).max())
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_over("crimson")  # distances the model never saw in training
    fig, axes = plt.subplots(1, len(maps), figsize=(4.3 * len(maps), 4.3), dpi=110)
    for ax, (name, d) in zip(axes, maps.items()):
        shown = torch.where(j <= i, d, -1).float().numpy() / 1000
        shown[shown < 0] = float("nan")
        im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=trained / 1000, origin="upper",
                       extent=(0, length / 1000, length / 1000, 0))
        ax.set_title(f"{name}\nlargest distance {largest[name]}", fontsize=9)
        ax.set_xlabel("key position (k)")
        ax.set_ylabel("query position (k)")
    fig.colorbar(im, ax=axes, extend="max",
                 label="distance RoPE sees (k tokens); red: past the trained length")
    fig.suptitle(f"Positions inside attention at {length} tokens (trained {trained})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"any of {', '.join(PARTS)}")
    ap.add_argument("--merge", action="store_true", help="run nothing: merge the part files")
    ap.add_argument("--factor", type=float, default=4.0)
    ap.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    ap.add_argument("--length", type=int, default=32768, help="perplexity length")
    ap.add_argument("--ppl-methods", default="none,ntk,dynamic,yarn,self-extend,dca")
    ap.add_argument("--passkey-methods", default="self-extend,dca,none,ntk,dynamic,yarn")
    ap.add_argument("--passkey-lengths", default="32768,16384,8192,4096")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--trials-at-05", default="32768=3", help="depth 0.5 overrides (bench_rope "
                    "--trials-at): a 32k trial at depth 0.5 prefills 16k tokens")
    ap.add_argument("--prefill-lengths", default="8192,16384,32768")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--nice", type=int, default=0,
                    help="extra niceness of the bench_rope children (they inherit this one's)")
    ap.add_argument("--work", type=Path, default=default_work(), help="part files")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_extend.json")
    ap.add_argument("--plot-dir", type=Path, default=IMG)
    ap.add_argument("--memory-probe", nargs=2, metavar=("METHOD", "LENGTH"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_probe:
        import torch

        torch.set_num_threads(args.threads)
        memory_probe(args.memory_probe[0], int(args.memory_probe[1]))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.merge:
        for part in (p for p in args.parts.split(",") if p):
            if part not in PARTS:
                ap.error(f"unknown part {part!r}; parts: {', '.join(PARTS)}")
            run_prefill(args) if part == "prefill" else run_part(part, args)
    result = merge(args)
    emit(result, args.out)
    if args.plot_dir:
        plot(result, args.plot_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
