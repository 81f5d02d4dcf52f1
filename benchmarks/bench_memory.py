"""Append N messages to a 4,000-token buffer, reading the budgeted view after every append.

contextwindow.TokenBufferMemory (in memory and on SQLite) against llama-index-core's current
``Memory``, its deprecated ``ChatMemoryBuffer``, and the naive buffer (append; pop the oldest
while the re-counted whole is over budget, then up to a user message). Every contender counts
with the same rule, whitespace-separated words with no per-message overhead: it is additive, so
llama-index's count of the joined history equals the sum of per-message counts. Before timing,
every contender is fed the first ``--check`` messages and must return the very same view after
every single append (the run stops otherwise); that pass is also the warm-up.

Each round then feeds the whole conversation to every contender, the order alternating between
rounds; a contender's round stops once it has run ``--limit`` seconds.
Run: .venv/bin/python benchmarks/bench_memory.py (writes docs/results/bench_memory.json)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from _common import add_out_argument, emit, log, machine, provenance

from contextwindow.memory import TokenBufferMemory
from contextwindow.messages import Message
from contextwindow.samples import sample_conversation
from contextwindow.stores import SQLiteStore
from contextwindow.tokens import TokenCounter

Step = Callable[[Message], list]  # add one message, return the view (as contents)


def words(text: str) -> list[str]:
    """The shared counting rule, as a tokenizer function (llama-index counts its length)."""
    return text.split()


WORDS = TokenCounter("words", lambda text: len(words(text)),
                     lambda message: len(words(message.content or "")), reply_priming=0)


class NaiveBuffer:
    """The simple token buffer: re-counts everything on each check and forgets what it pops."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens, self.buffer = max_tokens, []

    def add(self, message: Message) -> None:
        self.buffer.append(message)
        while sum(len(words(m.content)) for m in self.buffer) > self.max_tokens:
            self.buffer.pop(0)
        while len(self.buffer) > 1 and self.buffer[0].role != "user":
            self.buffer.pop(0)


def contenders(budget: int, tmp: Path) -> dict[str, Callable[[], Step]]:
    """Each name maps to a factory of a fresh contender."""
    from llama_index.core.llms import ChatMessage
    from llama_index.core.memory import ChatMemoryBuffer, Memory

    def ours(store_path: Path | None) -> Callable[[], Step]:
        def make() -> Step:
            store = SQLiteStore(store_path) if store_path else None
            if store_path:
                store.delete("bench")
            memory = TokenBufferMemory(budget, counter=WORDS, store=store, session="bench")

            def step(message: Message) -> list:
                memory.add_message(message)
                return [m.content for m in memory.messages()]
            return step
        return make

    def llama(make_memory: Callable[[], object]) -> Callable[[], Step]:
        def make() -> Step:
            memory = make_memory()

            def step(message: Message) -> list:
                memory.put(ChatMessage(role=message.role, content=message.content))
                return [m.content for m in memory.get()]
            return step
        return make

    def naive() -> Step:
        buffer = NaiveBuffer(budget)

        def step(message: Message) -> list:
            buffer.add(message)
            return [m.content for m in buffer.buffer]
        return step

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return {
            "contextwindow_in_memory": ours(None),
            "contextwindow_sqlite": ours(tmp / "bench.db"),
            "naive_recount_buffer": naive,
            # Memory: history only (ratio 1.0), flushing one message at a time, so its queue is
            # the same longest user-led suffix within the budget.
            "llama_index_Memory": llama(lambda: Memory.from_defaults(
                token_limit=budget, tokenizer_fn=words, chat_history_token_ratio=1.0,
                token_flush_size=1)),
            "llama_index_ChatMemoryBuffer_deprecated": llama(lambda: ChatMemoryBuffer.from_defaults(
                token_limit=budget, tokenizer_fn=words)),
        }


def feed(step: Step, conversation: list[Message], checkpoints: list[int], limit_s: float
         ) -> tuple[dict[int, float], int]:
    """Cumulative seconds at each checkpoint reached within ``limit_s``, and how many messages
    were fed."""
    seconds, done = {}, 0
    start = time.perf_counter()
    for done, message in enumerate(conversation, start=1):
        step(message)
        if done in checkpoints:
            seconds[done] = time.perf_counter() - start
        if time.perf_counter() - start > limit_s:
            break
    return seconds, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoints", default="1000,10000,50000")
    parser.add_argument("--budget", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (>= 5)")
    parser.add_argument("--check", type=int, default=400,
                        help="messages over which every view is compared (and warm-up)")
    parser.add_argument("--limit", type=float, default=60.0,
                        help="stop a contender's round once it has run this many seconds")
    add_out_argument(parser, "bench_memory")
    args = parser.parse_args()
    checkpoints = [int(x) for x in args.checkpoints.split(",")]
    conversation = sample_conversation(checkpoints[-1], seed=0, tool_every=0)[1:][:checkpoints[-1]]
    tmp = Path(tempfile.mkdtemp())
    makers = contenders(args.budget, tmp)
    names = list(makers)

    kept = check_equal_work(makers, conversation[:args.check])
    seconds: dict[str, dict[int, list[float]]] = {n: {c: [] for c in checkpoints} for n in names}
    fed: dict[str, list[int]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else reversed(names):
            got, done = feed(makers[name](), conversation, checkpoints, args.limit)
            fed[name].append(done)
            for c, s in got.items():
                seconds[name][c].append(s)
            log(f"round {r + 1}: {name} {({c: round(s, 3) for c, s in got.items()})}")

    table = {name: {str(c): summary(times) for c, times in by_c.items()}
             for name, by_c in seconds.items()}
    import llama_index.core

    emit({
        "benchmark": "memory_append_and_read",
        "inputs": {"budget": args.budget, "checkpoints": checkpoints, "rounds": args.rounds,
                   "equal_work_checked_messages": args.check,
                   "timing": "interleaved, alternating order",
                   "read_after_every_append": True,
                   "counter": "whitespace words, no per-message overhead (all contenders)",
                   "limit_s_per_round": args.limit,
                   "llama_index_core": llama_index.core.__version__},
        "kept_messages_after_check": kept,
        "identical_views": True,  # asserted by check_equal_work after every append
        "cumulative_seconds": table,
        "messages_fed_per_round": fed,
        "machine": machine(), **provenance(),
    }, args.out)


def check_equal_work(makers: dict[str, Callable[[], Step]], messages: list[Message]) -> int:
    """Feed ``messages`` to every contender side by side; after every append all views must be
    the same (stop the run otherwise). Returns the size of the last view."""
    steps = {name: make() for name, make in makers.items()}
    view: list = []
    for done, message in enumerate(messages, start=1):
        views = {name: step(message) for name, step in steps.items()}
        view = views[next(iter(views))]
        for name, other in views.items():
            if other != view:
                raise SystemExit(f"after {done} messages {name} keeps {len(other)} messages, "
                                 f"{next(iter(views))} {len(view)}: not the same work")
    log(f"equal work: the same view after each of {len(messages)} appends "
        f"({len(view)} messages at the end)")
    return len(view)


def summary(times: list[float]) -> dict[str, float | int] | None:
    """Median / min / max over the rounds that reached a checkpoint (None if none did)."""
    if not times:
        return None
    return {"median": round(statistics.median(times), 3), "min": round(min(times), 3),
            "max": round(max(times), 3), "runs": len(times)}


if __name__ == "__main__":
    main()
