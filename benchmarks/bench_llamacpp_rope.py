"""The RoPE registry's llama.cpp exports, checked inside llama.cpp.

Per scaling method: ``scale_rope`` on SmolLM2-135M (the registry's GGUF, dequantised to float32
by transformers) against llama.cpp (``llama-cpp-python``, its own venv) running the same GGUF with
exactly the flags ``to_llamacpp_flags`` prints, on the same token ids: per-position
log-likelihood of the next token, max / mean / p99 of the difference and the mean NLL on both
sides. Twice: on the GGUF as shipped (Q4_1: llama.cpp's matmuls round activations to 8 bits,
which no RoPE export can remove) and on the same GGUF dequantised to float32 by llama.cpp's own
quantizer, with a float32 KV cache (what the tolerance is checked on). Methods llama.cpp cannot
express keep the registry's reason. Prints one JSON object; writes
docs/results/bench_llamacpp_rope.json.

    nice -n 10 .venv/bin/python benchmarks/bench_llamacpp_rope.py --threads 1 --tokens 2048
    nice -n 10 .venv/bin/python benchmarks/bench_llamacpp_rope.py --threads 1 --tokens 8192 \
        --precisions f32 --out docs/results/bench_llamacpp_rope_8k.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_out_argument, emit, log, machine, provenance
from llamacpp_logprobs import llamacpp_logprobs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = ROOT.parent / "shared" / "corpora" / "austen_emma.txt"
MODEL = "smollm2-135m"
#: The SmolLM2 GGUF's ``general.architecture``: the prefix of the keys ``--override-kv`` sets.
ARCHITECTURE = "llama"
#: |Δ log-likelihood| (nats) allowed on the float32 GGUF, from the no-scaling gap measured there
#: over 2,048 tokens (max 8.8e-4, mean 1.8e-5): the max at any position 10x that, the mean over
#: positions 50x (YaRN with attention factor 1.5 sharpens attention logits 2.25x and with them
#: float32 rounding: its mean gap is 6.6x the unscaled one). Any scaling moves llama.cpp's own
#: output by >= 0.23 nats on average, 230x the mean tolerance. The float32 gap grows with the
#: position (rotary angles rounded in float32 on both sides): at 8,192 tokens the no-scaling gap
#: is 6x (max) and 3x (mean) this one, and the custom YaRN's max exceeds this tolerance.
TOLERANCE = {"max": 1e-2, "mean": 1e-3}
Case = tuple[str, dict[str, Any]]
#: The GGUFs llama.cpp runs: dequantised to float32 (the tolerance's) and as shipped.
PRECISIONS = ("f32", "q4_1")


def cases(factor: float, trained: int, rotary_half: int) -> dict[str, Case]:
    """label -> (method, parameters): no scaling, then every registered method (dynamic NTK
    also frozen at ``factor * trained`` tokens, YaRN also with non-default beta and attention
    factor, LongRoPE with illustrative factor lists)."""
    return {
        "none": ("none", {}),
        "linear": ("linear", {}),
        "ntk": ("ntk", {}),
        "dynamic": ("dynamic", {}),
        "dynamic, frozen": ("dynamic", {"seq_len": round(factor * trained)}),
        "yarn": ("yarn", {}),
        "yarn, custom": ("yarn", {"beta_fast": 16, "beta_slow": 2, "attention_factor": 1.5}),
        "llama3": ("llama3", {}),
        "longrope": ("longrope", {"short_factor": [1.0] * rotary_half,
                                  "long_factor": [factor] * rotary_half}),
        "self-extend": ("self-extend", {}),
        "dca": ("dca", {}),
    }


def export(model: Any, case: Case, factor: float) -> dict[str, Any]:
    """Apply ``case`` to ``model`` (left scaled): its ``rope_parameters`` and llama.cpp flags,
    or the registry's reason llama.cpp cannot express it."""
    from contextwindow.errors import ConfigError
    from contextwindow.rope import scale_rope, to_llamacpp_flags

    method, params = case
    rope_parameters = scale_rope(model, method, None if method == "none" else factor, **params)
    row: dict[str, Any] = {"method": method, "params": {k: v for k, v in params.items()
                                                         if k not in ("short_factor",
                                                                      "long_factor")},
                           "rope_parameters": _short(rope_parameters)}
    try:
        row["llamacpp_flags"] = to_llamacpp_flags(rope_parameters, architecture=ARCHITECTURE)
    except ConfigError as exc:
        row["unsupported"] = str(exc)
    return row


def _short(rope_parameters: dict[str, Any]) -> dict[str, Any]:
    """``rope_parameters`` without LongRoPE's per-frequency lists (their length is enough)."""
    return {k: f"{len(v)} factors" if isinstance(v, list) else v
            for k, v in rope_parameters.items()}


def our_logprobs(model: Any, ids: list[int]) -> Any:
    """Per-position log-likelihood of the next token under ``model`` as it is scaled now."""
    from contextwindow.evaluate.positions import next_token_nll

    return -next_token_nll(model, ids).numpy()


def gap(ours: Any, theirs: Any) -> dict[str, float]:
    """max / mean / p99 of |ours - theirs| and both mean NLLs (nats)."""
    import numpy as np

    diff = np.abs(np.asarray(ours) - np.asarray(theirs))
    return {"max": float(diff.max()), "mean": float(diff.mean()),
            "p99": float(np.quantile(diff, 0.99)),
            "nll_ours": float(-np.mean(ours)), "nll_llamacpp": float(-np.mean(theirs))}


def float32_gguf() -> Path:
    """Where the float32 copy of the GGUF is kept (made by llama.cpp on first use)."""
    from contextwindow.models.loading import cache_dir

    return cache_dir() / f"{MODEL}.f32.gguf"


def llama_python() -> str:
    """llama.cpp's interpreter, as the end-to-end tests find it."""
    return os.environ.get("CONTEXTWINDOW_LLAMA_PYTHON") or str(ROOT / ".venv-llama/bin/python")


def measure(model: Any, ids: list[int], factor: float, *, python: str, threads: int,
            precisions: tuple[str, ...] = PRECISIONS) -> dict[str, dict[str, Any]]:
    """Every case's export and, for those llama.cpp can express, the gap per precision
    (``f32``, ``q4_1``) and how far llama.cpp moved from its own unscaled output; llama.cpp runs
    alongside our forwards, one process per precision, under llama.cpp's ``python``. The model
    is left unscaled."""
    from contextwindow.models.loading import part_paths
    from contextwindow.models.registry import MODELS
    from contextwindow.rope import scale_rope

    config = model.config
    labelled = cases(factor, int(config.max_position_embeddings), head_dim(config) // 2)
    rows = {label: export(model, case, factor) for label, case in labelled.items()}
    scale_rope(model, "none")
    runs = {label: row["llamacpp_flags"] for label, row in rows.items()
            if "llamacpp_flags" in row}
    gguf = part_paths(MODELS[MODEL])[0]
    with ThreadPoolExecutor(len(precisions)) as pool:  # one llama.cpp process each
        pending = {p: pool.submit(llamacpp_logprobs, python, gguf, ids, runs,
                                  threads=threads, timeout=None,
                                  float32=float32_gguf() if p == "f32" else None)
                   for p in precisions}
        ours = {}
        for label in runs:
            export(model, labelled[label], factor)
            started = time.perf_counter()
            ours[label] = our_logprobs(model, ids)
            log(f"ours, {label}: {time.perf_counter() - started:.0f} s")
        scale_rope(model, "none")
        theirs = {p: future.result() for p, future in pending.items()}
    for label in runs:
        rows[label].update({p: gap(ours[label], theirs[p][label]) for p in precisions})
        rows[label]["llamacpp_change_vs_none"] = {
            p: {k: gap(theirs[p][label], theirs[p]["none"])[k] for k in ("max", "mean")}
            for p in precisions}
    return rows


def add_inputs(parser: argparse.ArgumentParser) -> None:
    """The inputs both llama.cpp comparisons take: text, length, factor, threads."""
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and llama.cpp threads (1 is steadier on shared cores)")


def model_and_ids(args: argparse.Namespace) -> tuple[Any, list[int]]:
    """SmolLM2 in float32 on ``args.threads`` threads, and the first ``args.tokens`` ids of
    ``args.text``."""
    import torch

    from contextwindow.models import load_model
    from contextwindow.models.hf import encode_prefix

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(MODEL, dtype="float32")
    return model, encode_prefix(tokenizer, args.text.read_text(encoding="utf-8"), args.tokens)


def head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_inputs(parser)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="the GGUF llama.cpp runs: float32 (the tolerance's) and/or Q4_1")
    add_out_argument(parser, "bench_llamacpp_rope")
    args = parser.parse_args()

    import torch

    started = time.perf_counter()
    model, ids = model_and_ids(args)
    rows = measure(model, ids, args.factor, python=llama_python(), threads=args.threads,
                   precisions=tuple(args.precisions))
    emit({
        "benchmark": "llamacpp_rope",
        "machine": {**machine(), "torch": torch.__version__, "threads": args.threads},
        "inputs": {"model": "SmolLM2-135M-Instruct Q4_1 GGUF (ours: dequantised, fp32)",
                   "llama_cpp_python": "0.3.36", "text": args.text.name, "tokens": len(ids),
                   "factor": args.factor, "architecture": ARCHITECTURE},
        "tolerance_f32": TOLERANCE,
        "methods": rows,
        "within_tolerance": {label: all(row["f32"][k] <= TOLERANCE[k] for k in TOLERANCE)
                             for label, row in rows.items() if "f32" in row},
        "seconds_total": round(time.perf_counter() - started, 1),
        **provenance(),
    }, args.out)


if __name__ == "__main__":
    main()
