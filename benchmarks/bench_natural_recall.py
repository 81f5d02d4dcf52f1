"""Recall of naturally phrased facts (preferences, relations, plans, corrections) per memory.

The facts come from :mod:`contextwindow.evaluate.natural_facts`: ordinary sentences the
key-facts extractor was not written for, some corrected later ("actually, make that Thursday").
A fact counts when the final context lets its question be answered: the answer verbatim, and
for a corrected fact the latest value after every mention of the stale one. Every memory gets
the same budget; the model-free ones run on ``--seeds`` seeds, the model summarizers (with
``--model [NAME]``, a registered model; SmolLM2 by default) on the first seed only (~25 s per
summarizer call with SmolLM2 on this CPU, several times that with Qwen2.5-0.5B).

    .venv/bin/python benchmarks/bench_natural_recall.py --model qwen2.5-0.5b   # docs/results/...
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import add_out_argument, emit, log, machine, provenance

from contextwindow.evaluate.natural_facts import natural_conversation, natural_recall
from contextwindow.evaluate.recall import default_memories
from contextwindow.memory import default_counter
from contextwindow.samples import sample_conversation


def run_seed(seed: int, args: argparse.Namespace, counter, summarizer) -> dict[str, object]:
    base = sample_conversation(args.turns, seed=seed)
    conversation, facts = natural_conversation(base, args.facts, args.corrections, seed=seed)
    memories = default_memories(args.budget, counter=counter, model_summarizer=summarizer,
                                max_summary_tokens=args.summary_tokens)
    last = {"name": None}

    def progress(name: str, done: int, total: int) -> None:
        if name != last["name"]:
            last["name"] = name
            log(f"[{time.strftime('%H:%M:%S')}] seed {seed}: feeding {name} ({total} messages)")

    rows = natural_recall(memories, conversation, facts, progress)
    corrected = [k for k, fact in enumerate(facts) if fact.corrected]
    return {
        "seed": seed, "messages": len(conversation),
        "tokens": counter.count_messages(conversation),
        "facts": [{"topic": f.topic, "question": f.question, "answer": f.answer,
                   "stale": f.stale} for f in facts],
        "rows": {row.name: {"answered": sum(row.answered),
                            "corrected_answered": sum(row.answered[k] for k in corrected),
                            "per_fact": list(row.answered), "tokens": row.tokens,
                            "messages": row.messages, "summarizer_calls": row.summarizer_calls,
                            "failures": row.failures, "seconds": round(row.seconds, 2),
                            "summary": row.summary} for row in rows},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--facts", type=int, default=10)
    parser.add_argument("--corrections", type=int, default=4)
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--summary-tokens", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--model", nargs="?", const="smollm2-135m", default=None,
                        help="add model-summarizer rows, with this registered model or local "
                             "directory (default smollm2-135m)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (with --model)")
    add_out_argument(parser, "bench_natural_recall")
    args = parser.parse_args()

    counter = default_counter()
    seeds = [run_seed(seed, args, counter, None) for seed in range(args.seeds)]
    model_seed = None
    if args.model:
        import torch

        from contextwindow.summarize import TransformersSummarizer

        torch.set_num_threads(args.threads)
        summarizer = TransformersSummarizer(model_path=args.model,
                                            max_new_tokens=args.max_new_tokens)
        summarizer.load()
        model_seed = run_seed(0, args, counter, summarizer)
    names = list(seeds[0]["rows"])
    total = args.facts * args.seeds
    emit({
        "benchmark": "natural_recall",
        "inputs": {"turns": args.turns, "facts": args.facts, "corrections": args.corrections,
                   "budget": args.budget, "max_summary_tokens": args.summary_tokens,
                   "seeds": args.seeds, "counter": counter.name,
                   "model": f"{args.model} (greedy), seed 0" if args.model else None,
                   "max_new_tokens": args.max_new_tokens},
        "summary": {name: {"answered": sum(s["rows"][name]["answered"] for s in seeds),
                           "of": total,
                           "corrected_answered": sum(s["rows"][name]["corrected_answered"]
                                                     for s in seeds),
                           "corrected_of": args.corrections * args.seeds,
                           "median_tokens": statistics.median(s["rows"][name]["tokens"]
                                                              for s in seeds)}
                    for name in names},
        "model_seed0": model_seed,
        "per_seed": seeds,
        "machine": machine(), **provenance(),
    }, args.out)


if __name__ == "__main__":
    main()
