"""kvpress's TOVA, SnapKV and observed-attention (H2O-like) presses on our 4k passkey prompt.

kvpress 0.5.5 pins ``transformers<5.3`` and so cannot share the project's environment; this
script runs in its own virtual environment, made with exactly:

    python3 -m venv /tmp/kvpress-venv && /tmp/kvpress-venv/bin/pip install -q torch==2.13.0
    /tmp/kvpress-venv/bin/pip install -q kvpress

and is run as ``OMP_NUM_THREADS=1 /tmp/kvpress-venv/bin/python benchmarks/kvpress_compare.py``.
It is not imported by the tests and CI never runs it.

The prompt is the one of ``contextwindow.evaluate.passkey.passkey_prompt``, reproduced here
because the package does not import in that environment (its model loader needs packages the
venv lacks). kvpress compresses the context (the prompt without its question) once at
prefill, to ``1 - budget / context_tokens``, so the context keeps ``budget`` tokens; the question
is then read on the compressed cache and the answer greedy-decoded by kvpress's own pipeline
code (``KVPressTextGenerationPipeline._forward``), fed our token ids instead of its chat template.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import transformers
from kvpress import ObservedAttentionPress, SnapKVPress, TOVAPress
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

INTRO = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there."
)
FILLER = (
    " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)
KEY_SENTENCE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "\nWhat is the pass key? The pass key is"

# press name -> (factory taking the compression ratio, attention implementation it needs)
PRESSES: dict[str, tuple[Any, str]] = {
    "tova": (lambda ratio: TOVAPress(compression_ratio=ratio), "sdpa"),
    "snapkv": (lambda ratio: SnapKVPress(compression_ratio=ratio), "sdpa"),
    "observed_attention": (lambda ratio: ObservedAttentionPress(compression_ratio=ratio), "eager"),
}


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def passkey_ids(tokenizer: Any, length: int, depth: float, key: str) -> tuple[list[int], list[int]]:
    """(context, question) token ids of our ``length``-token passkey prompt."""
    intro, unit = encode(tokenizer, INTRO), encode(tokenizer, FILLER)
    key_ids, question = encode(tokenizer, KEY_SENTENCE.format(key=key)), encode(tokenizer, QUESTION)
    n_filler = length - len(intro) - len(key_ids) - len(question)
    filler = (unit * (n_filler // len(unit) + 1))[:n_filler]
    before = round(depth * n_filler)
    return intro + filler[:before] + key_ids + filler[before:], question


def score(answer: str, key: str) -> bool:
    """Our exact rule: the first run of digits (spaces between digits ignored) is the key."""
    match = re.search(r"\d+", re.sub(r"(?<=\d)\s+(?=\d)", "", answer))
    return match is not None and match.group(0) == key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model",
                        default=str(Path.home() / ".cache/contextwindow/models/smollm2-135m"))
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--depth", type=float, default=0.5)
    parser.add_argument("--budget", type=int, default=1024)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--presses", default=",".join(PRESSES))
    parser.add_argument("--max-new-tokens", type=int, default=10)
    parser.add_argument("--out", default="docs/results/bench_kvpress.json")
    parser.add_argument("--resume", action="store_true",
                        help="keep the cells of --out and run only the keys it lacks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.presses.split(",")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    pipes = {
        impl: pipeline("kv-press-text-generation", tokenizer=tokenizer,
                       model=AutoModelForCausalLM.from_pretrained(
                           args.model, dtype=torch.float32, attn_implementation=impl).eval())
        for impl in {PRESSES[name][1] for name in names}
    }
    rng = random.Random(0)  # the keys of contextwindow.evaluate.passkey.passkey_keys(trials, 0)
    keys = [str(rng.randint(10000, 99999)) for _ in range(args.trials)]
    cells = {name: {"correct": 0, "keys": [], "answers": [], "seconds": 0.0} for name in names}
    if args.resume and Path(args.out).exists():
        cells.update(json.loads(Path(args.out).read_text())["presses"])
    result: dict[str, Any] = {
        "benchmark": "kvpress_compare",
        "versions": {"kvpress": version("kvpress"),
                     "transformers": transformers.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": dict(vars(args)), "threads": 1, "presses": cells,
    }
    for key in keys:  # keys outermost, so a stopped run still has every press on the same keys
        context, question = passkey_ids(tokenizer, args.length, args.depth, key)
        ratio = 1 - args.budget / len(context)
        result["settings"].update(context_tokens=len(context), question_tokens=len(question),
                                  compression_ratio=ratio)
        for name in (name for name in names if key not in cells[name]["keys"]):
            make, impl = PRESSES[name]
            started = time.perf_counter()
            with torch.inference_mode():
                answer = pipes[impl]._forward(
                    {"context_ids": torch.tensor([context]),
                     "questions_ids": [torch.tensor([question])]},
                    max_new_tokens=args.max_new_tokens, press=make(ratio))[0]
            cell = cells[name]
            cell["seconds"] += time.perf_counter() - started
            cell["keys"].append(key)
            cell["answers"].append(answer)
            cell["correct"] += score(answer, key)
            cell["trials"] = len(cell["keys"])
            print(name, key, repr(answer), flush=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
