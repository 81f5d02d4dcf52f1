"""Prompt-cache reuse of trimming policies: langchain-core trim_messages, contextwindow.trim today
(the newest turns that fit) and the cache-aware policy, on the same conversation.

A 300-turn synthetic chat (a tool round every 5th turn) is replayed request by request: before
every assistant message, each policy builds the prompt from the conversation so far, at a
4,000-token budget with gpt-4o counting (langchain gets the same per-message counts through its
``token_counter``, and the budget minus the reply priming it does not count). Reported per
policy: the fraction of prompt tokens that are an exact message prefix of the previous prompt,
the mean context fill, the cuts, and the billed tokens with cached tokens at 0.5 and 0.1 of the
price; a low-water sweep backs the default; ``recall`` is a cache-aware RecallMemory at the same
budget (older turns quoted before the newest user message), its reuse set against the
cache-aware figure without recall, with a sweep of the budget share recalled turns get; and
trim's time on a 10,000-message history with each policy (the cache policy replays the whole
history; a memory replays only what is new).
Run: .venv/bin/python benchmarks/bench_cache.py (writes docs/results/bench_cache.json and
docs/img/cache_billed.png)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import add_out_argument, emit, interleaved, log, machine, provenance, spread
from bench_trim import conversation_of, to_langchain
from langchain_core.messages.utils import trim_messages

from contextwindow.caching import CACHE_PRICE_RATIOS, CacheReport, replay, trimmer
from contextwindow.evaluate.report import plot_cache_billed
from contextwindow.memory import Memory, RecallMemory, TokenBufferMemory
from contextwindow.memory.recall import DEFAULT_RECALL_SHARE
from contextwindow.messages import Message
from contextwindow.samples import sample_conversation
from contextwindow.tokens import TokenCounter
from contextwindow.trim import DEFAULT_LOW_WATER, CachePolicy, trim

PLOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "cache_billed.png"


def langchain_trimmer(conversation: list[Message], budget: int, counter: TokenCounter):
    """trim_messages over the same turns, counted by our per-message rule (ids map back)."""
    lc = [to_langchain(m) for m in conversation]
    original = {id(m): conversation[k] for k, m in enumerate(lc)}
    priming = counter.overhead(has_system=True)

    def count(messages: list) -> int:
        return sum(counter.count_message(original[id(m)]) for m in messages)

    def policy(prompt: list[Message]) -> list[Message]:
        kept = trim_messages(lc[:len(prompt)], max_tokens=budget - priming, token_counter=count,
                             strategy="last", include_system=True, start_on="human")
        return [original[id(m)] for m in kept]

    return policy


def memory_trimmer(memory: Memory):
    """A replay policy on a memory: feed it the messages it has not seen, send its view."""
    def policy(prompt: list[Message]) -> list[Message]:
        for message in prompt[len(memory):]:
            memory.add_message(message)
        return memory.messages()

    return policy


def recall_trimmer(budget: int, counter: TokenCounter, share: float | None = None):
    """A cache-aware RecallMemory at ``budget`` (``share`` of it for recalled turns; None: the
    memory's default)."""
    recall_tokens = None if share is None else int(budget * share)
    return memory_trimmer(RecallMemory(budget, recall_tokens=recall_tokens, counter=counter,
                                       cache_policy=CachePolicy()))


def timing(rounds: int, budget: int) -> dict:
    """trim on a 10,000-message history (chars/4 counting, as bench_trim), each policy; and a
    cache-aware memory's add + view, per message, over the same history."""
    history = conversation_of(10_000)
    counter = TokenCounter.approximate()
    policy = CachePolicy()

    def newest() -> list:
        counter._count_message.cache_clear()
        return trim(history, budget, counter)

    def cache() -> list:
        counter._count_message.cache_clear()
        return trim(history, budget, counter, cache_policy=policy)

    times = interleaved({"trim_newest": newest, "trim_cache": cache}, rounds=rounds)
    memory = TokenBufferMemory(budget, counter=counter, cache_policy=policy)
    start = time.perf_counter()
    for message in history:
        memory.add_message(message)
        memory.messages()
    per_add = (time.perf_counter() - start) / len(history)
    return {"messages": len(history), "counter": "chars/4",
            "ms": {name: spread(t, 1e3) for name, t in times.items()},
            "memory_add_and_view_us": round(per_add * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--budget", type=int, default=4_000)
    parser.add_argument("--model", default="gpt-4o")
    parser.add_argument("--rounds", type=int, default=9, help="timing rounds")
    parser.add_argument("--plot", type=Path, default=PLOT)
    add_out_argument(parser, "bench_cache")
    args = parser.parse_args()

    conversation = sample_conversation(args.turns, seed=0, tool_every=5)
    counter = TokenCounter.for_model(args.model)
    contenders = {
        "langchain_trim_messages": langchain_trimmer(conversation, args.budget, counter),
        "trim_newest": trimmer("newest", args.budget, counter),
        "trim_cache": trimmer("cache", args.budget, counter),
        "recall": recall_trimmer(args.budget, counter),
    }
    reports: list[CacheReport] = []
    for name, policy in contenders.items():
        log(f"replaying {name}...")
        reports.append(replay(conversation, policy, counter, args.budget, name=name))
    sweep = {}
    for low_water in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        log(f"low water {low_water}...")
        report = replay(conversation, trimmer("cache", args.budget, counter, low_water=low_water),
                        counter, args.budget, name=f"cache_{low_water}")
        sweep[str(low_water)] = {key: report.summary()[key]
                                 for key in ("reuse", "mean_fill", "cuts", "billed_ratio")}
    cache_reuse = reports[2].reuse
    recall_sweep = {}
    for share in (0.1, 0.15, 0.2, 0.3):
        log(f"recall share {share}...")
        report = replay(conversation, recall_trimmer(args.budget, counter, share), counter,
                        args.budget, name=f"recall_{share}")
        recall_sweep[str(share)] = {"reuse": round(report.reuse, 6),
                                    "vs_trim_cache": round(report.reuse / cache_reuse, 3),
                                    "mean_fill": round(report.mean_fill, 6)}
    log("timing trim on 10,000 messages...")
    speed = timing(args.rounds, args.budget)
    plot_cache_billed(reports, args.plot, ratios=(0.1,),
                      title=f"{args.turns}-turn chat, budget {args.budget} tokens "
                            f"({args.model} counting)")
    log(f"wrote {args.plot}")
    newest = reports[1].billed(0.1)
    emit({
        "benchmark": "cache",
        "inputs": {"turns": args.turns, "messages": len(conversation),
                   "conversation_tokens": counter.count_messages(conversation),
                   "tool_calls_every_n_turns": 5, "budget": args.budget, "counter": counter.name,
                   "low_water": DEFAULT_LOW_WATER,
                   "recall_share": DEFAULT_RECALL_SHARE,
                   "cache_price_ratios": list(CACHE_PRICE_RATIOS),
                   "langchain_core": __import__("langchain_core").__version__},
        "policies": [r.summary() for r in reports],
        "billed_at_0.1_vs_trim_newest": {r.policy: round(r.billed(0.1) / newest, 3)
                                         for r in reports},
        "low_water_sweep": sweep,
        "recall_reuse_vs_trim_cache": round(reports[3].reuse / cache_reuse, 3),
        "recall_share_sweep": recall_sweep,
        "speed": speed,
        "machine": machine(), **provenance(),
    }, args.out)


if __name__ == "__main__":
    main()
