"""Summary memories: fact recall and context size per memory at one budget, and the latency of
an add that triggers summarization with the local model.

Plants facts (names, numbers, dates, codes, amounts) in the first quarter of a generated chat,
feeds it to Buffer, Window, TokenBuffer, SinkWindow and SummaryBuffer (local model, KeyFacts,
both), and reports how many facts survive verbatim in each final context and its size in
tokens (gpt-4o counting). These are the fact shapes the key-facts extractor was written for;
``bench_natural_recall.py`` measures facts phrased as people phrase them. Prints ONE JSON object
on stdout (and writes it to docs/results/bench_summary.json); progress goes to stderr.

    .venv/bin/python benchmarks/bench_summary.py                     # ~6 min on 2 busy cores
    .venv/bin/python benchmarks/bench_summary.py --no-model          # seconds
    .venv/bin/python benchmarks/bench_summary.py --plot docs/img/recall.png
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import add_out_argument, emit, log, machine, provenance

from contextwindow.evaluate.recall import default_memories, fact_recall
from contextwindow.evaluate.report import plot_recall
from contextwindow.memory import SummaryBufferMemory, TokenBufferMemory, default_counter
from contextwindow.samples import sample_conversation
from contextwindow.summarize import KeyFactsSummarizer, TransformersSummarizer


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 6) if values else None


def add_latency(counter, budget: int) -> dict[str, float | int | None]:
    """Median seconds of a TokenBuffer add, a SummaryBuffer add that does not summarize, and
    a SummaryBuffer add that folds with KeyFacts (no model)."""
    conversation = sample_conversation(200, seed=99)
    plain, folds, buffer_adds = [], [], []
    memory = SummaryBufferMemory(budget, KeyFactsSummarizer(), counter=counter)
    buffer = TokenBufferMemory(budget, counter=counter)
    for message in conversation:
        before = memory.summarizations
        started = time.perf_counter()
        memory.add_message(message)
        elapsed = time.perf_counter() - started
        (folds if memory.summarizations > before else plain).append(elapsed)
        started = time.perf_counter()
        buffer.add_message(message)
        buffer_adds.append(time.perf_counter() - started)
    return {"token_buffer_add_median_s": _median(buffer_adds),
            "summary_buffer_add_no_fold_median_s": _median(plain),
            "summary_buffer_keyfacts_fold_add_median_s": _median(folds),
            "keyfacts_fold_adds": len(folds)}


def seed_sweep(counter, budget: int, turns: int, facts: int, seeds: int) -> dict[str, object]:
    """Mean recall and tokens of the model-free memories over several seeds (facts, their
    positions and the chat all change with the seed)."""
    totals: dict[str, list[tuple[float, int]]] = {}
    for seed in range(seeds):
        report = fact_recall(n_facts=facts, turns=turns, seed=seed, budget=budget,
                             counter=counter)
        for row in report.rows:
            totals.setdefault(row.name, []).append((row.recall, row.tokens))
    return {"budget": budget, "turns": turns, "facts": facts, "seeds": seeds,
            "mean_recall": {name: round(statistics.mean(r for r, _ in values), 4)
                            for name, values in totals.items()},
            "mean_tokens": {name: round(statistics.mean(t for _, t in values))
                            for name, values in totals.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--facts", type=int, default=8)
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--summary-tokens", type=int, default=512)
    parser.add_argument("--low-water", type=float, default=0.5)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-model", action="store_true", help="skip the local-model rows")
    parser.add_argument("--plot", help="also write the recall bar chart (PNG) here")
    add_out_argument(parser, "bench_summary")
    args = parser.parse_args()

    counter = default_counter()
    began = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    summarizer = None
    load_s = None
    if not args.no_model:
        summarizer = TransformersSummarizer(max_new_tokens=args.max_new_tokens)
        started = time.perf_counter()
        summarizer.load()
        load_s = round(time.perf_counter() - started, 2)
        log(f"model loaded in {load_s} s")
    memories = default_memories(args.budget, counter=counter, model_summarizer=summarizer,
                                max_summary_tokens=args.summary_tokens,
                                low_water=args.low_water)
    last = {"name": None}

    def progress(name: str, done: int, total: int) -> None:
        if name != last["name"]:
            last["name"] = name
            log(f"[{time.strftime('%H:%M:%S')}] feeding {name} ({total} messages)")

    report = fact_recall(memories, n_facts=args.facts, turns=args.turns, seed=args.seed,
                         budget=args.budget, counter=counter, progress=progress)
    if args.plot:
        plot_recall(report, args.plot)
        log(f"plot written to {args.plot}")
    model_folds = [s for row in report.rows if "model" in row.name for s in row.fold_seconds]
    result = {
        "benchmark": "summary",
        "machine": machine(),
        "config": {"turns": args.turns, "facts": args.facts, "budget": args.budget,
                   "max_summary_tokens": args.summary_tokens, "low_water": args.low_water,
                   "seed": args.seed, "counter": report.counter,
                   "model": None if summarizer is None else "SmolLM2-135M-Instruct (greedy)",
                   "max_new_tokens": args.max_new_tokens,
                   "conversation_messages": report.conversation_messages,
                   "conversation_tokens": report.conversation_tokens},
        "facts": [{"kind": f.kind, "value": f.value, "position": p}
                  for f, p in zip(report.facts, report.positions)],
        "recall": {row.name: {"recalled": row.recalled, "facts": len(row.found),
                              "recall": round(row.recall, 4), "tokens": row.tokens,
                              "messages": row.messages, "summarizations": row.summarizations,
                              "seconds": round(row.seconds, 2),
                              **({"error": row.error} if row.error else {})}
                   for row in report.rows},
        "latency": {
            "model_load_s": load_s,
            "model_fold_add_median_s": _median(model_folds),
            "model_fold_adds": len(model_folds),
            "model_fold_add_all_s": [round(s, 2) for s in model_folds],
            **add_latency(counter, args.budget),
        },
        "seed_sweep_no_model": seed_sweep(counter, 1024, 60, args.facts, 5),
        "load_average_1_5_15": {"start": load_before,
                                "end": [round(x, 2) for x in os.getloadavg()]},
        "total_seconds": round(time.perf_counter() - began, 1),
    }
    result["final_summaries"] = {row.name: row.summary for row in report.rows
                                 if row.summary is not None}
    result.update(provenance())
    emit(result, args.out)


if __name__ == "__main__":
    main()
