"""KV eviction policies at equal budgets on SmolLM2-135M: needle in a stream, streaming
perplexity, decode cost and KV bytes.

Prints ONE JSON object on stdout (progress on stderr), writes it to docs/results/ after every
finished cell (``"complete": false`` until the end, so a stopped run keeps what it measured) and
draws docs/img/eviction.png.

* Passkey: a 5-digit key at each depth of each prompt length, the whole prompt streamed through
  a fresh cache of each policy and budget in ``--chunk``-token forwards, then greedy decoding
  (:func:`contextwindow.evaluate.needle.needle_in_a_stream`); the full cache is the ceiling.
* Streaming perplexity over the first ``--ppl-tokens`` tokens of a novel, 64-token chunks.
* Decode: ms per single-token step after ``--decode-after`` tokens of the novel, at the largest
  budget, and the KV bytes the cache then holds.

    python benchmarks/bench_eviction.py --threads 1
    python benchmarks/bench_eviction.py --budgets 1024 --depths 0.5 --trials 10 --no-ppl \\
        --no-decode --out docs/results/bench_eviction_goal.json --plot ''
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_out_argument, emit, interleaved, log, machine, provenance, spread

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = ROOT.parent / "shared" / "corpora" / "austen_emma.txt"


def _list(kind: type) -> Any:
    return lambda text: [kind(part) for part in text.split(",") if part]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--policies", type=_list(str), default=["sinks", "h2o", "tova", "snapkv"])
    p.add_argument("--budgets", type=_list(int), default=[256, 512, 1024])
    p.add_argument("--lengths", type=_list(int), default=[4096])
    p.add_argument("--depths", type=_list(float), default=[0.1, 0.5, 0.9])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--chunk", type=int, default=256, help="prompt tokens per forward")
    p.add_argument("--sinks", type=int, default=4)
    p.add_argument("--positions", choices=["slots", "stream"], default="slots",
                   help="how the scored policies number kept tokens (docs/eviction.md)")
    p.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    p.add_argument("--ppl-tokens", type=int, default=4096)
    p.add_argument("--no-ppl", action="store_true")
    p.add_argument("--decode-after", type=int, default=1536)
    p.add_argument("--decode-steps", type=int, default=16)
    p.add_argument("--no-decode", action="store_true")
    p.add_argument("--no-full", action="store_true", help="leave out the full-cache ceiling")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plot", default=str(ROOT / "docs" / "img" / "eviction.png"))
    add_out_argument(p, "bench_eviction")
    return p.parse_args()


def decode_costs(model: Any, ids: Any, policies: list[str], budget: int,
                 args: argparse.Namespace) -> list[dict]:
    """ms per one-token step after streaming ``decode_after`` tokens, and the KV bytes held.

    Every policy's cache is prefilled first; then each step is timed for every policy in turn,
    the order alternating (``_common.interleaved``), so a busy phase of a shared machine hits
    all policies alike.
    """
    import torch

    from contextwindow.kv import cache_nbytes, make_cache
    from contextwindow.models.hf import forward

    prefix, steps = ids[: args.decode_after], ids[args.decode_after :]
    caches = {policy: make_cache(model, policy, budget, sinks=args.sinks,
                                  positions=args.positions) for policy in policies}
    fed = dict.fromkeys(policies, 0)

    def step(policy: str) -> Any:
        def run() -> None:
            i = fed[policy]
            forward(model, steps[None, i : i + 1], caches[policy], logits_to_keep=1)
            fed[policy] += 1
        return run

    with torch.inference_mode():
        for cache in caches.values():
            for start in range(0, prefix.numel(), args.chunk):
                forward(model, prefix[None, start : start + args.chunk], cache, logits_to_keep=1)
        times = interleaved({p: step(p) for p in policies}, args.decode_steps)
    return [{"policy": p, "budget": None if p == "full" else budget,
             "after_tokens": args.decode_after, "ms": spread(times[p], 1000, 1),
             "kv_tokens": caches[p].get_seq_length(), "kv_bytes": cache_nbytes(caches[p])}
            for p in policies]


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from dataclasses import asdict

    from contextwindow.evaluate.needle import BudgetSweep, needle_in_a_stream
    from contextwindow.evaluate.report import plot_budget_sweep
    from contextwindow.evaluate.streaming import encode_text, streaming_perplexity
    from contextwindow.kv import make_cache
    from contextwindow.models import load_model

    model, tokenizer = load_model()
    text = args.text.read_text(encoding="utf-8")
    need = max(args.ppl_tokens, args.decode_after + args.decode_steps + 2)  # + warm-up step
    ids = encode_text(tokenizer, text, need)
    runs = ([] if args.no_full else [("full", None)])
    runs += [(p, b) for p in args.policies for b in args.budgets]
    result: dict[str, Any] = {
        "benchmark": "bench_eviction", "complete": False, "provenance": provenance(),
        "machine": machine(), "threads": args.threads, "model": model.config.name_or_path,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "passkey": [], "perplexity": [], "decode": [],
    }
    needles, perplexity = [], {}
    for policy, budget in runs:
        for length in args.lengths:
            for depth in args.depths:
                res = needle_in_a_stream(
                    model, tokenizer, policy=policy, budget=budget, sinks=args.sinks,
                    positions=args.positions, length=length, depth=depth, trials=args.trials,
                    chunk=args.chunk,
                )
                needles.append(res)
                result["passkey"].append(asdict(res) | {"accuracy": res.accuracy})
                log(f"passkey {policy} {budget} {length}@{depth}: {res.correct}/{res.trials} "
                    f"({res.seconds:.0f} s) {res.answers}")
                emit_partial(result, args)
        if not args.no_ppl:
            cache = make_cache(model, policy, budget, sinks=args.sinks,
                                  positions=args.positions)
            run = streaming_perplexity(model, None, ids[: args.ppl_tokens], cache=cache)
            perplexity[(policy, budget)] = run.ppl
            result["perplexity"].append(
                {
                    "policy": policy,
                    "budget": budget,
                    "ppl": round(run.ppl, 3),
                    "tokens": run.tokens,
                    "seconds": round(run.seconds, 1),
                    "max_cache_tokens": run.max_cache_tokens,
                }
            )
            log(f"perplexity {policy} {budget}: {run.ppl:.2f} ({run.seconds:.0f} s)")
            emit_partial(result, args)
    if not args.no_decode:
        policies = ["full", *args.policies]
        result["decode"] = decode_costs(model, ids, policies, max(args.budgets), args)
        for row in result["decode"]:
            log(f"decode {row}")
    sweep = BudgetSweep(needles=tuple(needles), perplexity=perplexity, ppl_tokens=args.ppl_tokens)
    if args.plot:
        lengths = ", ".join(str(n) for n in args.lengths)
        plot_budget_sweep(
            sweep,
            args.plot,
            title=f"SmolLM2-135M: passkey at depths {args.depths} "
            f"of {lengths}-token prompts ({args.trials} keys each), chunks of {args.chunk}, "
            f"{args.positions} positions",
        )
        log(f"wrote {args.plot}")
    result["summary"] = {
        f"{p} {b}": {"accuracy": sweep.accuracy(p, b), "ppl": perplexity.get((p, b))}
        for p, b in runs
    }
    result["complete"] = True
    emit(result, args.out)


def emit_partial(result: dict[str, Any], args: argparse.Namespace) -> None:
    """Rewrite the output file with what is measured so far (no stdout)."""
    import json

    if str(args.out) != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
