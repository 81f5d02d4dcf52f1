"""Per-position log-likelihood of a token-id list inside llama.cpp, given llama.cpp's own flags.

Run with llama.cpp's interpreter (``.venv-llama/bin/python``, which has ``llama-cpp-python``
and not contextwindow): it reads one JSON object on stdin,
``{"model": GGUF, "tokens": [ids], "threads": n, "runs": {name: [llama.cpp CLI flags]}}``,
and prints ``{name: [logprob of tokens[i + 1] after tokens[: i + 1], ...]}``. The flags are the
ones ``contextwindow.rope.to_llamacpp_flags`` prints for ``llama-cli`` / ``llama-server``;
:func:`llama_kwargs` translates them into ``llama_cpp.Llama`` arguments exactly as llama.cpp's
argument parser does (``--rope-scale s`` is a frequency scale of ``1 / s``), so what is checked
is the flag list a user would paste. An unknown flag is an error, not ignored. With
``"float32": PATH`` the GGUF is first dequantised to float32 there (once), and evaluated with a
float32 KV cache: llama.cpp then computes in the precision of our float32 forward.

:func:`llamacpp_logprobs` is the other end of the pipe, called from contextwindow's venv.

    .venv-llama/bin/python benchmarks/llamacpp_logprobs.py < request.json > logprobs.json
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: ``--rope-scaling`` values: llama.cpp's ``enum llama_rope_scaling_type``.
SCALING_TYPES = {"none": 0, "linear": 1, "yarn": 2}
#: Flags taking one number: (``Llama`` argument, type).
NUMBER_FLAGS: dict[str, tuple[str, type]] = {
    "--rope-freq-base": ("rope_freq_base", float),
    "--rope-freq-scale": ("rope_freq_scale", float),
    "--yarn-orig-ctx": ("yarn_orig_ctx", int),
    "--yarn-ext-factor": ("yarn_ext_factor", float),
    "--yarn-attn-factor": ("yarn_attn_factor", float),
    "--yarn-beta-fast": ("yarn_beta_fast", float),
    "--yarn-beta-slow": ("yarn_beta_slow", float),
    "--ctx-size": ("n_ctx", int),
}
#: ``--override-kv`` value types.
OVERRIDE_TYPES: dict[str, Any] = {"float": float, "int": int, "str": str,
                                  "bool": lambda text: text == "true"}


def llama_kwargs(flags: Sequence[str]) -> dict[str, Any]:
    """``llama_cpp.Llama`` keyword arguments for llama.cpp CLI ``flags``; ``ValueError`` on a
    flag this runner does not know (it must never silently drop one)."""
    if len(flags) % 2:
        raise ValueError(f"flags must be name/value pairs, got {list(flags)}")
    kwargs: dict[str, Any] = {}
    for name, value in zip(flags[::2], flags[1::2]):
        if name == "--override-kv":  # KEY=TYPE:VALUE, llama.cpp's GGUF metadata override
            key, _, typed = value.partition("=")
            kind, _, text = typed.partition(":")
            if kind not in OVERRIDE_TYPES:
                raise ValueError(f"unknown --override-kv type in {value!r}")
            kwargs.setdefault("kv_overrides", {})[key] = OVERRIDE_TYPES[kind](text)
        elif name == "--rope-scaling":
            if value not in SCALING_TYPES:
                raise ValueError(f"unknown --rope-scaling {value!r}")
            kwargs["rope_scaling_type"] = SCALING_TYPES[value]
        elif name == "--rope-scale":  # llama.cpp: params.rope_freq_scale = 1.0f / value
            kwargs["rope_freq_scale"] = 1.0 / float(value)
        elif name in NUMBER_FLAGS:
            key, kind = NUMBER_FLAGS[name]
            kwargs[key] = kind(value)
        else:
            raise ValueError(f"no llama_cpp.Llama argument for llama.cpp flag {name}")
    return kwargs


def dequantise(model: str, out: str) -> None:
    """``model`` rewritten with every tensor in float32 by llama.cpp's own quantizer: the same
    dequantised values transformers reads, so llama.cpp's matmuls no longer round activations
    to 8 bits (a Q4_1 matmul does)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    partial = Path(out).with_suffix(".partial")
    if llama_cpp.llama_model_quantize(model.encode(), str(partial).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not dequantise {model}")
    partial.replace(out)


def evaluate(model: str, tokens: list[int], flags: Sequence[str], threads: int,
             exact: bool) -> list[float]:
    """One fresh llama.cpp context with ``flags``: the log-probability of every next token
    (``exact``: with a float32 KV cache instead of llama.cpp's default float16)."""
    import llama_cpp
    import numpy as np

    kwargs = {"n_ctx": len(tokens), **llama_kwargs(flags)}
    if exact:
        kwargs.update(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    llm = llama_cpp.Llama(model_path=model, logits_all=True, n_threads=threads,
                          n_threads_batch=threads, verbose=False, **kwargs)
    try:
        llm.eval(tokens)
        out = np.empty(len(tokens) - 1)
        for start in range(0, len(tokens) - 1, 512):
            stop = min(start + 512, len(tokens) - 1)
            logits = llm.scores[start:stop].astype(np.float64)
            peak = logits.max(axis=1, keepdims=True)
            norm = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
            out[start:stop] = logits[np.arange(stop - start), tokens[start + 1:stop + 1]] - norm
        return out.tolist()
    finally:
        llm.close()


def llamacpp_logprobs(python: str, model: Path | str, tokens: Sequence[int],
                      runs: Mapping[str, Sequence[str]], *, threads: int = 1,
                      float32: Path | str | None = None,
                      timeout: float | None = 1800) -> dict[str, list[float]]:
    """Run this script under llama.cpp's ``python``: per run name, the per-position
    log-likelihood llama.cpp computes with that run's flags (``timeout`` seconds for all of
    them, ``None`` for no limit: 8k-token runs take longer than the default). With ``float32``
    (a path), on ``model`` dequantised to float32 there (made once) with a float32 KV cache.
    ``RuntimeError`` with its stderr when it fails."""
    request = {"model": str(model), "tokens": list(tokens), "threads": threads,
               "float32": None if float32 is None else str(float32),
               "runs": {name: list(flags) for name, flags in runs.items()}}
    done = subprocess.run([python, str(Path(__file__).resolve())], input=json.dumps(request),
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"llama.cpp runner failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, list[float]] = json.loads(done.stdout)
    return result


def main() -> None:
    request = json.load(sys.stdin)
    model, exact = request["model"], request.get("float32") is not None
    if exact:
        if not Path(request["float32"]).is_file():
            dequantise(model, request["float32"])
        model = request["float32"]
    result = {name: evaluate(model, request["tokens"], flags, request["threads"], exact)
              for name, flags in request["runs"].items()}
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
