"""Per-position log-likelihood of a token-id list inside llama.cpp, given llama.cpp's own flags.

Run with llama.cpp's interpreter (``.venv-llama/bin/python``, which has ``llama-cpp-python``
and not contextwindow): it reads one JSON object on stdin,
``{"model": GGUF, "tokens": [ids], "threads": n, "runs": {name: {llama_cpp.Llama arguments}}}``,
and prints ``{name: [logprob of tokens[i + 1] after tokens[: i + 1], ...]}``. With
``"float32": PATH`` the GGUF is first dequantised to float32 there (once), and evaluated with a
float32 KV cache: llama.cpp then computes in the precision of our float32 forward.

:func:`llamacpp_logprobs` is the other end of the pipe, called from contextwindow's venv with
the flags ``contextwindow.rope.to_llamacpp_flags`` prints for ``llama-cli`` / ``llama-server``:
it translates them with :func:`contextwindow.generation.llamacpp.llama_kwargs`, the translation
``--engine llama.cpp`` uses (as llama.cpp's argument parser does: ``--rope-scale s`` is a
frequency scale of ``1 / s``; an unknown flag is an error), so what is checked is the flag list
a user would paste, translated as the engine translates it.

    .venv-llama/bin/python benchmarks/llamacpp_logprobs.py < request.json > logprobs.json
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def run_arguments(flags: Sequence[str]) -> dict[str, Any]:
    """The ``llama_cpp.Llama`` arguments of one run: ``flags`` as the engine translates them,
    and ``--ctx-size`` (which the engine takes from its own ``context``) as ``n_ctx``."""
    from contextwindow.generation.llamacpp import llama_kwargs

    pairs = (flags[k:k + 2] for k in range(0, len(flags), 2))  # a dangling flag is refused
    kwargs = llama_kwargs([piece for pair in pairs if pair[0] != "--ctx-size" or len(pair) < 2
                           for piece in pair])
    for name, value in zip(flags[::2], flags[1::2]):
        if name == "--ctx-size":
            kwargs["n_ctx"] = int(value)
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


def evaluate(model: str, tokens: list[int], arguments: Mapping[str, Any], threads: int,
             exact: bool) -> list[float]:
    """One fresh llama.cpp context with ``arguments``: the log-probability of every next token
    (``exact``: with a float32 KV cache instead of llama.cpp's default float16)."""
    import llama_cpp
    import numpy as np

    kwargs = {"n_ctx": len(tokens), **arguments}
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
               "runs": {name: run_arguments(flags) for name, flags in runs.items()}}
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
    result = {name: evaluate(model, request["tokens"], arguments, request["threads"], exact)
              for name, arguments in request["runs"].items()}
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
