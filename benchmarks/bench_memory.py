"""Append N messages to a 4,000-token buffer, reading the budgeted view after every append.

contextwindow.TokenBufferMemory (in memory and on SQLite) against llama-index-core's
ChatMemoryBuffer and the naive buffer (append; pop the oldest while the re-counted whole is over
budget), all with the same chars/4 tokenizer. Totals at 1k / 10k / 50k messages show how each
grows. Run: .venv/bin/python benchmarks/bench_memory.py
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import emit, log, machine
from contextwindow.memory import TokenBufferMemory
from contextwindow.messages import Message
from contextwindow.samples import sample_conversation
from contextwindow.stores import SQLiteStore
from contextwindow.tokens import TokenCounter


def chars4(text: str) -> list[int]:
    """A tokenizer function: ceil(len/4) pseudo-tokens (what llama-index's tokenizer_fn returns)."""
    return [0] * math.ceil(len(text) / 4)


class NaiveBuffer:
    """The simple token buffer: re-counts everything on each check and forgets what it pops."""

    def __init__(self, max_tokens: int, counter: TokenCounter) -> None:
        self.max_tokens, self.counter, self.buffer = max_tokens, counter, []

    def _count(self) -> int:
        return sum(len(chars4(m.content or "")) + 3 for m in self.buffer) + 3

    def add(self, message: Message) -> None:
        self.buffer.append(message)
        while self._count() > self.max_tokens:
            self.buffer.pop(0)

    def messages(self) -> list[Message]:
        return list(self.buffer)


def run(make: Callable[[], Callable[[Message], object]], conversation: list[Message],
        checkpoints: list[int], limit_s: float) -> dict[str, float | None]:
    """Cumulative seconds at each checkpoint; None for checkpoints not reached in ``limit_s``."""
    step = make()
    out: dict[str, float | None] = {str(c): None for c in checkpoints}
    start = time.perf_counter()
    for done, message in enumerate(conversation, start=1):
        step(message)
        if str(done) in out:
            out[str(done)] = round(time.perf_counter() - start, 3)
        if time.perf_counter() - start > limit_s:
            out["stopped_after_messages"] = done
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoints", default="1000,10000,50000")
    parser.add_argument("--budget", type=int, default=4000)
    parser.add_argument("--limit", type=float, default=120.0,
                        help="stop a contender once it has run this many seconds")
    args = parser.parse_args()
    checkpoints = [int(x) for x in args.checkpoints.split(",")]

    conversation = sample_conversation(checkpoints[-1], seed=0, tool_every=0)[1:]
    conversation = conversation[: checkpoints[-1]]
    counter = TokenCounter.approximate()
    tmp = Path(tempfile.mkdtemp())

    def ours(store=None) -> Callable[[], Callable[[Message], object]]:
        def make():
            memory = TokenBufferMemory(args.budget, counter=counter, store=store)

            def step(message: Message):
                memory.add_message(message)
                return memory.messages()
            return step
        return make

    def llama_index():
        from llama_index.core.llms import ChatMessage
        from llama_index.core.memory import ChatMemoryBuffer

        memory = ChatMemoryBuffer.from_defaults(token_limit=args.budget, tokenizer_fn=chars4)

        def step(message: Message):
            memory.put(ChatMessage(role=message.role, content=message.content))
            return memory.get()
        return step

    def naive():
        buffer = NaiveBuffer(args.budget, counter)

        def step(message: Message):
            buffer.add(message)
            return buffer.messages()
        return step

    results = {}
    for name, make in [("contextwindow_in_memory", ours()),
                       ("contextwindow_sqlite", ours(SQLiteStore(tmp / "bench.db"))),
                       ("naive_recount_buffer", naive),
                       ("llama_index_ChatMemoryBuffer", llama_index)]:
        log(f"running {name} ...")
        results[name] = run(make, conversation, checkpoints, args.limit)
        log(f"  {results[name]}")

    last = str(checkpoints[-1])
    per_message_us = {name: (round(r[last] / int(last) * 1e6, 2) if r[last] else None)
                      for name, r in results.items()}
    ratios = {}
    first = str(checkpoints[0])
    for name, r in results.items():
        later = [c for c in checkpoints[1:] if r.get(str(c)) is not None]
        if later and r[first]:
            c = later[-1]
            ratios[name] = {f"time_{c}_over_time_{first}": round(r[str(c)] / r[first], 1),
                            "linear_would_be": round(c / int(first), 1)}
    import llama_index.core

    emit({
        "benchmark": "memory_append_and_read",
        "inputs": {"budget": args.budget, "checkpoints": checkpoints,
                   "read_after_every_append": True, "tokenizer": "chars/4 (all contenders)",
                   "limit_s_per_contender": args.limit,
                   "llama_index_core": llama_index.core.__version__},
        "cumulative_seconds": results,
        "seconds_per_message_at_end_us": per_message_us,
        "growth": ratios,
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
