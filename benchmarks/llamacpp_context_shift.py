"""Stream token ids through a llama.cpp context and score every token (its NLL), with
llama.cpp's own context shift when the context is full.

Runs in the llama.cpp venv (``.venv-llama/bin/python``), which has ``llama-cpp-python`` but not
contextwindow, so it imports nothing of ours. JSON in on stdin, JSON out on stdout:

    {"model": "FILE.gguf", "tokens": [ids...], "n_ctx": 1024, "n_keep": 4, "batch": 64,
     "shift": true, "threads": 1}
    -> {"nll": [...], "positions": [1, 2, ...], "shifts": [...], "n_ctx": 1024, ...}

``nll[i]`` is the NLL of ``tokens[positions[i]]`` given what the context held when it was fed.

**The shift** is the one llama.cpp's ``main`` example does for infinite generation (its C++
server does the same by default): when the next batch would fill the context (``n_past + batch
>= n_ctx``, ``main``'s test), keep the first ``n_keep`` cells, remove ``n_discard = (n_past -
n_keep) // 2`` cells after them (``llama_memory_seq_rm``) and move the rest down by ``n_discard``
positions (``llama_memory_seq_add``, which re-rotates their cached keys on the next decode).
Half of the window goes at once and then refills, so the context a token sees swings between
about ``n_ctx / 2`` and ``n_ctx``. ``n_keep`` is counted in cells, as the sinks are. llama.cpp
pads a context to a multiple of 256 cells; any other ``n_ctx`` is refused.

``"shift": false`` is a plain evaluation: the text must fit in ``n_ctx`` (no cell is ever
removed), the reference for the llama.cpp vs transformers gap on the same GGUF.
"""

from __future__ import annotations

import ctypes
import json
import math
import sys
import time
from typing import Any

import llama_cpp
import numpy as np

SEQ = 0


@llama_cpp.llama_log_callback
def _quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp logs every tensor it loads on stderr; errors still surface as return codes."""


class Context:
    """One llama.cpp model and context of ``n_ctx`` cells, fed ``batch`` tokens per decode."""

    def __init__(self, model_path: str, *, n_ctx: int, batch: int, threads: int) -> None:
        llama_cpp.llama_backend_init()
        llama_cpp.llama_log_set(_quiet, ctypes.c_void_p())
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self.model = llama_cpp.llama_model_load_from_file(model_path.encode(), mparams)
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {model_path}")
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = batch
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise SystemExit(f"llama.cpp could not create a context of {n_ctx} tokens")
        if llama_cpp.llama_n_ctx(self.ctx) != n_ctx:  # it pads to a multiple of 256
            raise SystemExit(f"llama.cpp made a context of {llama_cpp.llama_n_ctx(self.ctx)} "
                             f"tokens, not {n_ctx}: ask for a multiple of 256")
        self.n_ctx = n_ctx
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(batch, 0, 1)

    def decode(self, tokens: list[int], first_pos: int) -> np.ndarray:
        """Feed ``tokens`` at positions ``first_pos, first_pos + 1, ...``; their logits."""
        b = self.batch
        b.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, first_pos + i, 1, True
            b.seq_id[i][0] = SEQ
        code = llama_cpp.llama_decode(self.ctx, b)
        if code != 0:
            raise SystemExit(f"llama_decode returned {code} at position {first_pos}")
        logits = llama_cpp.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(logits, shape=(len(tokens), self.n_vocab)).copy()

    def shift(self, n_keep: int, n_past: int) -> int:
        """llama.cpp's context shift; returns ``n_discard``."""
        n_discard = (n_past - n_keep) // 2
        llama_cpp.llama_memory_seq_rm(self.mem, SEQ, n_keep, n_keep + n_discard)
        llama_cpp.llama_memory_seq_add(self.mem, SEQ, n_keep + n_discard, n_past, -n_discard)
        return n_discard

    def positions(self) -> tuple[int, int]:
        return (llama_cpp.llama_memory_seq_pos_min(self.mem, SEQ),
                llama_cpp.llama_memory_seq_pos_max(self.mem, SEQ))

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)


def token_nll(logits: np.ndarray, targets: list[int]) -> list[float]:
    """``-log softmax(logits)[target]`` per row, in float64."""
    z = logits.astype(np.float64)
    top = z.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return (lse - z[np.arange(len(targets)), targets]).tolist()


def stream(job: dict[str, Any]) -> dict[str, Any]:
    """Score ``job["tokens"]`` batch by batch, shifting as llama.cpp does when ``shift``."""
    ids: list[int] = job["tokens"]
    n_ctx, n_keep, size = job["n_ctx"], job.get("n_keep", 4), job.get("batch", 64)
    shift = job.get("shift", True)
    if not shift and len(ids) - 1 > n_ctx:
        raise SystemExit(f"{len(ids)} tokens do not fit in n_ctx={n_ctx} without a shift")
    ctx = Context(job["model"], n_ctx=n_ctx, batch=size, threads=job.get("threads", 1))
    out: dict[str, Any] = {"nll": [], "positions": [], "shifts": [], "n_ctx": ctx.n_ctx,
                           "max_cells": 0, "llama_cpp": llama_cpp.__version__}
    n_past, started = 0, time.perf_counter()
    for start in range(0, len(ids) - 1, size):
        piece = ids[start : min(start + size, len(ids) - 1)]  # the last token is only a target
        if shift and n_past + len(piece) >= n_ctx:
            n_discard = ctx.shift(n_keep, n_past)
            pos_min, pos_max = ctx.positions()
            out["shifts"].append({"at": start, "n_past": n_past, "n_discard": n_discard,
                                  "pos_min": pos_min, "pos_max": pos_max})
            n_past -= n_discard
        targets = ids[start + 1 : start + 1 + len(piece)]
        out["nll"].extend(token_nll(ctx.decode(piece, n_past), targets))
        out["positions"].extend(range(start + 1, start + 1 + len(targets)))
        n_past += len(piece)
        out["max_cells"] = max(out["max_cells"], n_past)
    out["seconds"] = time.perf_counter() - started
    out["final_positions"] = list(ctx.positions())
    ctx.close()
    nll = out["nll"]
    out["ppl"] = math.exp(sum(nll) / len(nll)) if nll else math.nan
    return out


if __name__ == "__main__":
    json.dump(stream(json.load(sys.stdin)), sys.stdout)
