"""The sink cache across model families: SmolLM2 (Llama), Qwen2.5 (Qwen2), Gemma-3 (local+global).

Prints ONE JSON object on stdout (progress on stderr), writes it to
``docs/results/bench_families.json`` after every finished model (so a long run can be watched
or stopped), and draws one streaming plot per model.

Quality: perplexity of the same novel, fed ``--chunk`` tokens at a time, with dense attention,
sinks + window, a plain window of the same size, and sinks + window without re-positioning.
Speed: greedy decode tokens/s and prefill tokens/s in float32 and bfloat16 (interleaved rounds,
one torch thread), which is how each model's registered default dtype was chosen.

    python benchmarks/bench_families.py --threads 1                       # every installed model
    python benchmarks/bench_families.py --models gemma3-270m --no-speed --tokens 1024
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, emit, interleaved, log, machine, provenance

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = ROOT.parent / "shared" / "corpora" / "austen_northangerabbey.txt"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default="", help="comma-separated names (default: installed ones)")
    p.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    p.add_argument("--tokens", type=int, default=3072)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--sinks", type=int, default=4)
    p.add_argument("--window", type=int, default=508)
    p.add_argument("--dtype", default="float32", help="dtype of the perplexity runs")
    p.add_argument("--no-speed", action="store_true", help="skip the fp32 / bf16 timing")
    p.add_argument("--no-ppl", action="store_true", help="skip the perplexity runs")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds per dtype")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "bench_families.json")
    p.add_argument("--plots", type=Path, default=ROOT / "docs" / "img")
    return p.parse_args()


def installed_models() -> list[str]:
    from contextwindow.errors import ModelError
    from contextwindow.models import MODELS, part_paths

    names = []
    for name, spec in MODELS.items():
        try:
            part_paths(spec)
        except ModelError as exc:
            log(f"skipping {name}: {exc}")
            continue
        names.append(name)
    return names


def speed(name: str, rounds: int) -> dict[str, Any]:
    """Prefill (512 tokens) and greedy decode (32 tokens) speed in float32 and bfloat16."""
    import torch
    from transformers import DynamicCache

    from contextwindow.models import load_model
    from contextwindow.models.hf import forward

    models = {dtype: load_model(name, dtype=dtype)[0] for dtype in ("float32", "bfloat16")}
    prompt = torch.randint(100, 1000, (1, 512), generator=torch.Generator().manual_seed(0))
    steps = 32

    def prefill(model: Any) -> None:
        with torch.inference_mode():
            forward(model, prompt, DynamicCache(config=model.config), logits_to_keep=1)

    def decode(model: Any) -> None:
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            logits = forward(model, prompt[:, :16], cache, logits_to_keep=1).logits
            for _ in range(steps):
                token = logits[0, -1].argmax().view(1, 1)
                logits = forward(model, token, cache, logits_to_keep=1).logits

    out: dict[str, Any] = {}
    for kind, fn, tokens in (("prefill", prefill, 512), ("decode", decode, steps)):
        times = interleaved({d: (lambda m=m, fn=fn: fn(m)) for d, m in models.items()}, rounds)
        for dtype, ts in times.items():
            out.setdefault(dtype, {})[f"{kind}_tokens_per_s"] = round(
                tokens / statistics.median(ts), 2
            )
    log(f"  speed {out}")
    return out


def perplexities(name: str, ids: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """Streaming perplexity of ``ids`` under the four cache set-ups; draws the plot."""
    from contextwindow.evaluate.report import plot_streaming
    from contextwindow.evaluate.streaming import streaming_perplexity
    from contextwindow.kv import SinkCache
    from contextwindow.models import load_model, model_spec

    model, _ = load_model(name, dtype=args.dtype)
    budget = args.sinks + args.window
    setups = {
        "dense": lambda: None,
        f"sinks {args.sinks}+{args.window}": lambda: SinkCache(
            model, sinks=args.sinks, window=args.window
        ),
        f"window 0+{budget}": lambda: SinkCache(model, sinks=0, window=budget),
        f"sinks {args.sinks}+{args.window} no reposition": lambda: SinkCache(
            model, sinks=args.sinks, window=args.window, reposition=False
        ),
    }
    results = []
    for label, make in setups.items():
        result = streaming_perplexity(model, None, ids, cache=make(), chunk=args.chunk, label=label)
        log(f"  {label}: ppl {result.ppl:.2f} in {result.seconds:.0f}s")
        results.append(result)
    dense = results[0].ppl
    plot = plot_streaming(
        results,
        args.plots / f"families_{name}.png",
        trained_length=model_spec(name).trained_context,
        title=f"{name}: {len(ids)} tokens, chunks of {args.chunk}",
    )
    return {
        "runs": {
            r.label: {
                "ppl": round(r.ppl, 3),
                "vs_dense": round(r.ppl / dense, 3),
                "max_cache_tokens": r.max_cache_tokens,
                "max_cache_bytes": r.max_cache_bytes,
                "seconds": round(r.seconds, 1),
            }
            for r in results
        },
        "plot": str(plot.relative_to(ROOT)) if plot.is_relative_to(ROOT) else str(plot),
    }


def main() -> None:
    args = parse_args()
    import torch
    from transformers import AutoTokenizer

    from contextwindow.evaluate.streaming import encode_text
    from contextwindow.models import model_spec, resolve

    torch.set_num_threads(args.threads)
    text = args.text.read_text(encoding="utf-8")
    names = [n for n in args.models.split(",") if n] or installed_models()
    if not names:
        log("no registered model is installed")
        sys.exit(1)
    result: dict[str, Any] = {
        "benchmark": "families",
        "text": args.text.name,
        "settings": {k: str(v) for k, v in vars(args).items() if k not in ("out", "plots")},
        "machine": machine(),
        "threads": args.threads,
        "provenance": provenance(),
        "models": {},
    }
    for name in names:
        started = time.perf_counter()
        spec = model_spec(name)
        log(f"== {name}")
        tokenizer = AutoTokenizer.from_pretrained(resolve(name))
        ids = encode_text(tokenizer, text, args.tokens).tolist()
        entry: dict[str, Any] = {"trained_context": spec.trained_context, "tokens": len(ids)}
        if not args.no_speed:
            entry["speed"] = speed(name, args.rounds)
        if not args.no_ppl:
            entry["perplexity"] = perplexities(name, ids, args)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        result["models"][name] = entry
        save_partial(result, args.out)
    emit(result, args.out)


def save_partial(result: dict[str, Any], out: Path) -> None:
    """Rewrite the JSON after each model, so a long run can be watched or stopped."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {out} (partial)")


if __name__ == "__main__":
    main()
