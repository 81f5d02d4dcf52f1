"""Evidence recall on long generated chats: which memories still hold the turns that answer a
question asked after 150 dated sessions, at 1,024 / 2,048 / 4,096 prompt tokens.

The conversations come from :func:`contextwindow.evaluate.longchat.generate` (seeded, no
model): everyday requests and small talk with facts said once in passing, some corrected
later, and 42 questions per chat (single-fact, multi-fact, temporal, updated) with their gold
evidence turns. Every contender builds its context for each question at each budget
(:mod:`contextwindow.evaluate.contenders`); reported per contender x budget x question kind:
the share of gold evidence turns inside the context (pooled over the seeds), the share of
questions with all their evidence, the share whose answer value is in the context, tokens,
and -- for llama-index's ``Memory``, whose counts leave out message framing -- how often its
context went over the budget by our count (gpt-4o). Our contexts never do (checked on each).
The hybrid recall and llama-index share one local embedding model (all-MiniLM-L6-v2);
``--no-dense`` leaves both out. ``--chats FILE...`` runs on conversations from elsewhere
(:meth:`LongChat.to_dict`'s JSON) instead of generated ones.

    nice -n 10 .venv/bin/python benchmarks/bench_recall.py   # docs/results/bench_recall.json
    .venv/bin/python benchmarks/bench_recall.py --no-dense --shares 0.1 0.15 0.2 0.3 \
        --out docs/results/bench_recall_shares.json --plot docs/img/recall_shares.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import add_out_argument, emit, log, machine, provenance

from contextwindow.evaluate.contenders import (
    CONTENDERS,
    llamaindex_vector_memory,
    recall_hybrid,
    recall_lexical,
)
from contextwindow.evaluate.evidence import BUDGETS, Contender, Score, evidence_recall, shares
from contextwindow.evaluate.longchat import DEFAULT_QUESTIONS, LongChat, generate
from contextwindow.evaluate.longchat_facts import KINDS
from contextwindow.evaluate.report import plot_evidence
from contextwindow.memory import default_counter

PLOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "recall_evidence.png"
LLAMAINDEX = "llama-index Memory + VectorMemoryBlock"


def contenders(args: argparse.Namespace) -> dict[str, Contender]:
    """The model-free contenders (with the lexical recall at each ``--shares``), then those on
    the local embedding model (one instance)."""
    out = dict(CONTENDERS)
    for share in args.shares:
        out[f"recall, lexical, share {share:g}"] = recall_lexical(share)
    if not args.no_dense:
        import torch

        from contextwindow.retrieval.dense import Embedder

        torch.set_num_threads(args.threads)
        embedder = Embedder()
        out["recall, hybrid (RecallMemory)"] = recall_hybrid(embedder)
        out[LLAMAINDEX] = llamaindex_vector_memory(embedder)
    return out


def row(scores: list[Score], budget: int) -> dict[str, object]:
    tokens = [s.tokens for s in scores]
    over = [s.tokens - budget for s in scores if s.over_budget(budget)]
    kinds = [*KINDS, *sorted({s.kind for s in scores} - set(KINDS))]  # a loaded chat's own
    return {**shares(scores, kinds),
            "tokens": {"median": statistics.median(tokens), "max": max(tokens)},
            "over_budget": {"contexts": len(over), "of": len(scores),
                            "max_over": max(over, default=0)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=150)
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--chats", type=Path, nargs="+",
                        help="run on these conversations (LongChat JSON) instead of --seeds")
    parser.add_argument("--no-dense", action="store_true",
                        help="leave out the contenders on the embedding model (hybrid recall, "
                             "llama-index): no torch, faster")
    parser.add_argument("--shares", type=float, nargs="+", default=[],
                        help="also the lexical recall with these shares of the budget for "
                        "recalled turns (the default share is 0.5): what a smaller block, "
                        "which keeps more of the prompt cache, costs in evidence")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (embedding)")
    parser.add_argument("--plot", type=Path, default=PLOT)
    add_out_argument(parser, "bench_recall")
    args = parser.parse_args()

    counter = default_counter()
    lineup = contenders(args)
    pooled: dict[str, dict[int, list[Score]]] = {n: {b: [] for b in args.budgets} for n in lineup}
    chats = []
    began = time.perf_counter()
    sources = args.chats or range(args.seeds)
    for seed, source in enumerate(sources):
        chat = (LongChat.from_dict(json.loads(source.read_text(encoding="utf-8")))
                if isinstance(source, Path) else generate(seed, sessions=args.sessions))
        chats.append({"source": str(source) if isinstance(source, Path) else f"seed {seed}",
                      "messages": len(chat.messages), "questions": len(chat.questions),
                      "tokens": counter.count_messages(chat.messages),
                      "first_day": chat.messages[0].timestamp,
                      "last_day": chat.messages[-1].timestamp})
        log(f"{chats[-1]['source']}: {len(chat.messages)} messages, {chats[-1]['tokens']} tokens")
        result = evidence_recall(chat, lineup, args.budgets, counter,
                                 progress=lambda name, b, seed=seed: log(
                                     f"[{time.perf_counter() - began:6.0f} s] seed {seed}: "
                                     f"{name} at {b}"))
        for name, per_budget in result.items():
            for budget, scores in per_budget.items():
                pooled[name][budget] += scores
    table = {name: {str(b): row(scores, b) for b, scores in per.items()}
             for name, per in pooled.items()}
    plot_evidence({name: {b: table[name][str(b)]["all"]["evidence"] for b in args.budgets}
                   for name in table}, args.plot,
                  title=f"Gold evidence turns in the context: {len(chats)} chats, "
                        f"{sum(c['questions'] for c in chats)} questions (gpt-4o tokens)")
    log(f"wrote {args.plot}")
    emit({
        "benchmark": "recall",
        "inputs": {"seeds": None if args.chats else args.seeds,
                   "sessions": None if args.chats else args.sessions, "chats": chats,
                   "questions_per_chat": dict(DEFAULT_QUESTIONS), "budgets": args.budgets,
                   "recall_shares": args.shares,
                   "counter": counter.name,
                   "metric": "evidence: gold evidence turns whose full text is in the context, "
                             "pooled over turns; complete: questions with all of theirs; "
                             "answer: questions whose answer value(s) are in the context "
                             "(dates shown as recalled turns show them)",
                   "llamaindex": None if args.no_dense else {
                       "token_limit": "the budget", "token_flush_size": "0.1 x budget",
                       "chat_history_token_ratio": 0.7, "similarity_top_k": 2,
                       "retrieval_context_window": 5, "insert_method": "system",
                       "tokenizer": "o200k_base", "embedding": "all-MiniLM-L6-v2 (local)",
                       "llama_index_core": __import__("llama_index.core").core.__version__}},
        "results": table,
        "evidence_all": {name: {str(b): table[name][str(b)]["all"]["evidence"]
                                for b in args.budgets} for name in table},
        "seconds": round(time.perf_counter() - began, 1),
        "machine": machine(), **provenance(),
    }, args.out)


if __name__ == "__main__":
    main()
