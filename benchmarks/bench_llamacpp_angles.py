"""Where the gap to llama.cpp comes from: our forward with llama.cpp's float32 rotary angles.

``bench_llamacpp_rope.py`` finds our ``scale_rope`` and llama.cpp (float32 GGUF) apart by a gap
that grows with the position, past its tolerance for the custom YaRN at 8,192 tokens. The
per-dimension frequencies of both sides agree to float32's precision (checked here first, in
float64 arithmetic), so the question is the arithmetic. This runs, per exported case, our
float32 forward twice on the same token ids: as transformers computes the rotary tables
(``inv_freq`` times the position, one float32 product per angle), and with the tables ggml's CPU
backend computes (``ggml_rope_cache_init`` / ``rope_yarn`` in llama.cpp's ``ggml-cpu/ops.cpp``,
as vendored by llama-cpp-python 0.3.36, transcribed below: the angle of pair ``i`` is the
position multiplied ``i`` times by ``powf(base, -2 / n_dims)``, each product rounded to float32,
then YaRN's ramp mixed in float32), each against llama.cpp given the registry's flags. If the
gap is the angles' arithmetic, the second forward closes it at every position. Prints one JSON
object; writes docs/results/bench_llamacpp_angles.json.

    nice -n 10 .venv/bin/python benchmarks/bench_llamacpp_angles.py --threads 1 --tokens 8192
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_out_argument, emit, log, machine, provenance
from bench_llamacpp_rope import (
    MODEL,
    TOLERANCE,
    add_inputs,
    cases,
    export,
    float32_gguf,
    gap,
    head_dim,
    llama_python,
    model_and_ids,
    our_logprobs,
)
from llamacpp_logprobs import llamacpp_logprobs

F = np.float32
QUARTERS = 4


def ggml_parameters(flags: Sequence[str]) -> dict[str, float]:
    """What ggml's RoPE receives for ``flags`` (llama.cpp's defaults where a flag is absent):
    the base, the frequency scale (``--rope-scale s`` is ``1 / s``), YaRN's extrapolation factor
    (1 for ``--rope-scaling yarn``, else 0), its betas and original context."""
    given = dict(zip(flags[::2], flags[1::2], strict=True))
    kind = given.get("--rope-scaling", "none")
    scaled = kind in ("linear", "yarn")
    return {"base": float(given["--rope-freq-base"]),
            "freq_scale": 1.0 / float(given["--rope-scale"]) if scaled else 1.0,
            "ext_factor": 1.0 if kind == "yarn" else 0.0,
            "beta_fast": float(given.get("--yarn-beta-fast", 32.0)),
            "beta_slow": float(given.get("--yarn-beta-slow", 1.0)),
            "n_ctx_orig": float(given.get("--yarn-orig-ctx", 0.0))}


def _corr_dims(p: dict[str, float], n_dims: int) -> tuple[Any, Any]:
    """``ggml_rope_yarn_corr_dims``: the pair indices where YaRN's ramp starts and ends (any
    pair, without YaRN: the ramp is then multiplied by an extrapolation factor of 0)."""
    if not p["ext_factor"]:
        return F(0), F(1)

    def corr_dim(n_rot: float) -> Any:
        return F(n_dims) * F(math.log(F(p["n_ctx_orig"]) / (F(n_rot) * F(2) * F(math.pi)))) / (
            F(2) * F(math.log(F(p["base"]))))

    return (F(max(0.0, math.floor(corr_dim(p["beta_fast"])))),
            F(min(n_dims - 1, math.ceil(corr_dim(p["beta_slow"])))))


def _ramp(i: int, low: Any, high: Any, ext_factor: Any, cast: Any) -> Any:
    """``rope_yarn_ramp(low, high, 2 i) * ext_factor``: how much of pair ``i`` keeps its
    unscaled angle, in the arithmetic of ``cast`` (``float`` or ``np.float32``)."""
    y = (cast(i) - low) / max(cast(0.001), high - low)
    return (cast(1) - min(cast(1), max(cast(0), y))) * ext_factor


def ggml_frequencies(p: dict[str, float], n_dims: int) -> Any:
    """Each pair's angle per position in exact (float64) arithmetic, by ggml's formula."""
    low, high = (float(x) for x in _corr_dims(p, n_dims))
    out = []
    for i in range(n_dims // 2):
        extrap = p["base"] ** (-2.0 * i / n_dims)
        ramp = _ramp(i, low, high, p["ext_factor"], float)
        out.append(p["freq_scale"] * extrap * (1 - ramp) + extrap * ramp)
    return np.array(out)


def ggml_tables(length: int, p: dict[str, float], n_dims: int, scaling: float) -> tuple[Any, Any]:
    """cos / sin, ``(length, n_dims)`` in transformers' layout (each pair's value twice), as
    ggml's CPU backend computes them in float32. ``scaling``: the cos / sin multiplier
    (transformers' ``attention_scaling``, which the export makes llama.cpp's ``mscale``)."""
    theta_scale = F(math.pow(F(p["base"]), F(-2.0) / F(n_dims)))  # powf
    low, high = _corr_dims(p, n_dims)
    freq_scale, ext_factor = F(p["freq_scale"]), F(p["ext_factor"])
    theta = np.arange(length, dtype=F)
    cos = np.empty((length, n_dims // 2), F)
    sin = np.empty((length, n_dims // 2), F)
    for i in range(n_dims // 2):
        angle = freq_scale * theta
        if ext_factor != 0:
            ramp = _ramp(i, low, high, ext_factor, F)
            angle = angle * (F(1) - ramp) + theta * ramp
        cos[:, i] = np.cos(angle.astype(np.float64)).astype(F)  # cosf: correctly rounded
        sin[:, i] = np.sin(angle.astype(np.float64)).astype(F)
        theta = theta * theta_scale
    return (np.concatenate([cos, cos], 1) * F(scaling), np.concatenate([sin, sin], 1) * F(scaling))


def with_tables(model: Any, ids: list[int], tables: tuple[Any, Any]) -> Any:
    """Our per-position log-likelihood with the rotary tables replaced by ``tables``."""
    import torch

    rotary = model.model.rotary_emb
    cos, sin = (torch.from_numpy(t) for t in tables)

    def forward(x: Any, position_ids: Any) -> tuple[Any, Any]:
        rows = position_ids[0]
        return cos[rows][None].to(x.dtype), sin[rows][None].to(x.dtype)

    rotary.forward = forward
    try:
        return our_logprobs(model, ids)
    finally:
        del rotary.forward  # the class's own again


def by_quarter(ours: Any, theirs: Any) -> list[float]:
    diff = np.abs(np.asarray(ours) - np.asarray(theirs))
    size = len(diff) // QUARTERS
    return [float(diff[k * size:(k + 1) * size].max()) for k in range(QUARTERS)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_inputs(parser)
    add_out_argument(parser, "bench_llamacpp_angles")
    args = parser.parse_args()

    import torch

    from contextwindow.models.loading import part_paths
    from contextwindow.models.registry import MODELS
    from contextwindow.rope import scale_rope

    started = time.perf_counter()
    model, ids = model_and_ids(args)
    config = model.config
    dims = head_dim(config)
    labelled = cases(args.factor, int(config.max_position_embeddings), dims // 2)
    rows = {label: export(model, case, args.factor) for label, case in labelled.items()}
    runs = {label: row["llamacpp_flags"] for label, row in rows.items()
            if "llamacpp_flags" in row}
    scale_rope(model, "none")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(llamacpp_logprobs, llama_python(), part_paths(MODELS[MODEL])[0],
                              ids, runs, threads=args.threads, timeout=None,
                              float32=float32_gguf())
        ours: dict[str, dict[str, Any]] = {}
        for label, flags in runs.items():
            export(model, labelled[label], args.factor)
            rotary = model.model.rotary_emb
            params = ggml_parameters(flags)
            frequencies = ggml_frequencies(params, dims)
            ours[label] = {
                "params": params,
                "frequency_max_relative_difference": float(np.max(np.abs(
                    rotary.inv_freq.double().numpy() - frequencies) / frequencies)),
                "transformers": our_logprobs(model, ids),
                "ggml_angles": with_tables(model, ids, ggml_tables(
                    len(ids), params, dims, float(rotary.attention_scaling)))}
            log(f"ours, {label}: both tables done")
        scale_rope(model, "none")
        theirs = pending.result()
    methods = {}
    for label, row in ours.items():
        methods[label] = {"llamacpp_flags": runs[label], "ggml": row["params"],
                          "frequency_max_relative_difference":
                              row["frequency_max_relative_difference"]}
        for tables in ("transformers", "ggml_angles"):
            found = gap(row[tables], theirs[label])
            methods[label][tables] = {"max": found["max"], "mean": found["mean"],
                                      "p99": found["p99"],
                                      "max_by_quarter": by_quarter(row[tables], theirs[label])}
    emit({
        "benchmark": "llamacpp_angles",
        "machine": {**machine(), "torch": torch.__version__, "threads": args.threads},
        "inputs": {"model": "SmolLM2-135M-Instruct, float32 GGUF in llama.cpp, fp32 ours",
                   "llama_cpp_python": "0.3.36", "text": args.text.name, "tokens": len(ids),
                   "factor": args.factor},
        "tolerance_f32": TOLERANCE,
        "methods": methods,
        "within_tolerance": {label: {tables: all(row[tables][k] <= TOLERANCE[k]
                                                 for k in TOLERANCE)
                                     for tables in ("transformers", "ggml_angles")}
                             for label, row in methods.items()},
        "seconds_total": round(time.perf_counter() - started, 1),
        **provenance(),
    }, args.out)


if __name__ == "__main__":
    main()
