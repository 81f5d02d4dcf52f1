"""Trim a 10,000-message conversation to 4,000 tokens: contextwindow.trim vs langchain-core.

Both get the same LangChain message objects and the same chars/4 counting rule, and must keep
the same messages; the benchmark checks that before timing. Run: .venv/bin/python benchmarks/bench_trim.py
"""

from __future__ import annotations

import argparse
import json
import math

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.utils import trim_messages

from _common import emit, log, machine, median_seconds
from contextwindow.messages import Message
from contextwindow.samples import sample_conversation
from contextwindow.tokens import REPLY_PRIMING, TOKENS_PER_MESSAGE, TokenCounter
from contextwindow.trim import trim

ROLE_OF = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def to_langchain(message: Message) -> BaseMessage:
    if message.role == "system":
        return SystemMessage(message.content)
    if message.role == "user":
        return HumanMessage(message.content)
    if message.role == "tool":
        return ToolMessage(message.content, tool_call_id=message.tool_call_id)
    calls = [{"id": c.id, "name": c.name, "args": json.loads(c.arguments)} for c in message.tool_calls]
    return AIMessage(message.content or "", tool_calls=calls)


def langchain_price(message: BaseMessage) -> int:
    """contextwindow's approximate rule, written directly against LangChain objects."""
    def t(text: str) -> int:
        return math.ceil(len(text) / 4)

    tokens = TOKENS_PER_MESSAGE + t(ROLE_OF[message.type]) + t(message.content or "")
    for call in getattr(message, "tool_calls", None) or ():
        tokens += TOKENS_PER_MESSAGE + t(call["name"]) + t(json.dumps(call["args"]))
    if message.type == "tool":
        tokens += t(message.tool_call_id)
    return tokens


def langchain_counter(messages: list[BaseMessage]) -> int:
    """The list-level counter LangChain calls (what it builds from a per-message one)."""
    return sum(langchain_price(message) for message in messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--budget", type=int, default=4_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    conversation: list[Message] = []
    turns = args.messages // 2
    while len(conversation) < args.messages:
        conversation = sample_conversation(turns, seed=0, tool_every=5)
        turns += 100
    conversation = conversation[: args.messages]
    while conversation[-1].role == "tool" or conversation[-1].tool_calls:
        conversation.pop()  # end on a complete unit
    lc_messages = [to_langchain(m) for m in conversation]
    dicts = [m.to_openai() for m in conversation]
    counter = TokenCounter.approximate()

    def ours() -> list:
        counter._count_message.cache_clear()  # no help from earlier runs
        return trim(lc_messages, args.budget, counter)

    def theirs() -> list:
        # LangChain does not count the reply priming; give it the same effective budget.
        return trim_messages(lc_messages, max_tokens=args.budget - REPLY_PRIMING,
                             token_counter=langchain_counter, strategy="last",
                             include_system=True, start_on="human")

    kept_ours, kept_theirs = ours(), theirs()
    same = [id(m) for m in kept_ours] == [id(m) for m in kept_theirs]
    log(f"kept {len(kept_ours)} (ours) / {len(kept_theirs)} (langchain); identical={same}")

    ours_s, _ = median_seconds(ours, args.runs)
    theirs_s, _ = median_seconds(theirs, args.runs)

    def ours_dicts() -> list:
        counter._count_message.cache_clear()
        return trim(dicts, args.budget, counter)

    dicts_s, _ = median_seconds(ours_dicts, args.runs)
    emit({
        "benchmark": "trim",
        "inputs": {"messages": len(conversation), "tool_calls_every_n_turns": 5,
                   "budget": args.budget, "runs": args.runs, "counter": "chars/4 (same rule both)",
                   "langchain_core": __import__("langchain_core").__version__},
        "kept_messages": len(kept_ours), "identical_result": same,
        "kept_tokens": counter.count_messages(trim(conversation, args.budget, counter)),
        "median_ms": {"contextwindow_langchain_input": round(ours_s * 1e3, 3),
                      "contextwindow_openai_dicts": round(dicts_s * 1e3, 3),
                      "langchain_trim_messages": round(theirs_s * 1e3, 3)},
        "speedup_vs_langchain": round(theirs_s / ours_s, 1),
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
