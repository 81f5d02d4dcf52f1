"""Trim a 10,000-message conversation to 4,000 tokens: contextwindow.trim vs langchain-core.

Both get the same LangChain message objects and the same chars/4 counting rule, and must keep
the very same messages (checked before timing: the run stops otherwise). A second case puts an
image in every 4th user message (a 640x480 PNG data URL at high detail, or a remote URL at low
detail, alternating), counted by OpenAI's tile rule on both sides. The contenders are
timed interleaved, one call each per round over ``--rounds`` alternating rounds after a warm-up.
Run: .venv/bin/python benchmarks/bench_trim.py (writes docs/results/bench_trim.json)
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math

from _common import add_out_argument, emit, interleaved, log, machine, provenance, spread
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.utils import trim_messages

from contextwindow.images import DEFAULT_PRICING, image_size
from contextwindow.messages import Message
from contextwindow.samples import sample_conversation
from contextwindow.tokens import REPLY_PRIMING, TOKENS_PER_MESSAGE, TokenCounter
from contextwindow.trim import trim

ROLE_OF = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def to_langchain(message: Message) -> BaseMessage:
    if message.role == "system":
        return SystemMessage(message.content)
    if message.role == "user":
        return HumanMessage(message.content_parts or message.content)
    if message.role == "tool":
        return ToolMessage(message.content, tool_call_id=message.tool_call_id)
    calls = [{"id": c.id, "name": c.name, "args": json.loads(c.arguments)}
             for c in message.tool_calls]
    return AIMessage(message.content or "", tool_calls=calls)


def langchain_price(message: BaseMessage) -> int:
    """contextwindow's approximate rule, written directly against LangChain objects."""
    def t(text: str) -> int:
        return math.ceil(len(text) / 4)

    tokens = TOKENS_PER_MESSAGE + t(ROLE_OF[message.type])
    for part in message.content if isinstance(message.content, list) else [message.content]:
        if isinstance(part, str):
            tokens += t(part)
        elif part["type"] == "text":
            tokens += t(part["text"])
        else:  # an image_url part: OpenAI's tile rule, the size read from a data URL
            image = part["image_url"]
            tokens += DEFAULT_PRICING.tokens(image_size(image["url"]), image["detail"])
    for call in getattr(message, "tool_calls", None) or ():
        tokens += TOKENS_PER_MESSAGE + t(call["name"]) + t(json.dumps(call["args"]))
    if message.type == "tool":
        tokens += t(message.tool_call_id)
    return tokens


def langchain_counter(messages: list[BaseMessage]) -> int:
    """The list-level counter LangChain calls (what it builds from a per-message one)."""
    return sum(langchain_price(message) for message in messages)


def conversation_of(size: int) -> list[Message]:
    """The first ``size`` messages of a sample chat (a tool call every 5th turn), cut back to
    end on a complete unit."""
    conversation: list[Message] = []
    turns = size // 2
    while len(conversation) < size:
        conversation = sample_conversation(turns, seed=0, tool_every=5)
        turns += 100
    conversation = conversation[:size]
    while conversation[-1].role == "tool" or conversation[-1].tool_calls:
        conversation.pop()
    return conversation


def with_images(conversation: list[Message], every: int = 4) -> list[Message]:
    """``conversation`` with an image in every ``every``-th user message."""
    buffer = io.BytesIO()
    __import__("PIL.Image").Image.new("RGB", (640, 480), "white").save(buffer, "PNG")
    images = [{"url": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(),
               "detail": "high"}, {"url": "https://example.org/photo.jpg", "detail": "low"}]
    out, users = [], 0
    for message in conversation:
        if message.role == "user":
            users += 1
            if users % every == 0:
                image = images[users // every % 2]
                message = Message(role="user", id=message.id, content=[
                    {"type": "text", "text": message.content},
                    {"type": "image_url", "image_url": image}])
        out.append(message)
    return out


def compare(conversation: list[Message], args: argparse.Namespace) -> dict:
    """Check that both keep the same messages, then time them; the figures of one case."""
    lc_messages = [to_langchain(m) for m in conversation]
    dicts = [m.to_openai() for m in conversation]
    counter = TokenCounter.approximate()

    def ours_langchain() -> list:
        counter._count_message.cache_clear()  # no help from earlier runs
        return trim(lc_messages, args.budget, counter)

    def ours_dicts() -> list:
        counter._count_message.cache_clear()
        return trim(dicts, args.budget, counter)

    def theirs() -> list:
        # LangChain does not count the reply priming; give it the same effective budget.
        return trim_messages(lc_messages, max_tokens=args.budget - REPLY_PRIMING,
                             token_counter=langchain_counter, strategy="last",
                             include_system=True, start_on="human")

    kept_lc, kept_theirs, kept_dicts = ours_langchain(), theirs(), ours_dicts()
    kept_tokens = counter.count_messages(kept_dicts)
    # Equal work, asserted: the very same objects, and the same count under both rules.
    if [id(m) for m in kept_lc] != [id(m) for m in kept_theirs]:
        raise SystemExit(f"not the same result: {len(kept_lc)} kept by trim, "
                         f"{len(kept_theirs)} by trim_messages")
    if [dicts.index(d) for d in kept_dicts] != [lc_messages.index(m) for m in kept_lc]:
        raise SystemExit("trim kept other messages from OpenAI dicts than from LangChain ones")
    if langchain_counter(kept_theirs) + REPLY_PRIMING != kept_tokens:
        raise SystemExit("the two counting rules disagree on the kept messages")
    log(f"both keep the same {len(kept_lc)} messages ({kept_tokens} tokens); timing...")

    times = interleaved({"contextwindow_openai_dicts": ours_dicts,
                         "contextwindow_langchain_input": ours_langchain,
                         "langchain_trim_messages": theirs}, rounds=args.rounds)
    ms = {name: spread(t, 1e3) for name, t in times.items()}
    base = ms["langchain_trim_messages"]["median"]
    return {
        "kept_messages": len(kept_lc), "kept_tokens": kept_tokens,
        "identical_result": True,  # asserted above
        "ms": ms,
        "speedup_vs_langchain": {name: round(base / m["median"], 1) for name, m in ms.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--budget", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds (>= 5)")
    add_out_argument(parser, "bench_trim")
    args = parser.parse_args()

    conversation = conversation_of(args.messages)
    text_only = compare(conversation, args)
    log("now with images...")
    mixed = compare(with_images(conversation), args)
    emit({
        "benchmark": "trim",
        "inputs": {"messages": len(conversation), "tool_calls_every_n_turns": 5,
                   "budget": args.budget, "rounds": args.rounds, "warmup": 1,
                   "timing": "interleaved, alternating order",
                   "counter": "chars/4 (same rule both)",
                   "langchain_core": __import__("langchain_core").__version__},
        **text_only,
        "mixed_text_image": {"images": "every 4th user message: 640x480 PNG data URL (high) "
                                       "or remote URL (low), alternating", **mixed},
        "machine": machine(), **provenance(),
    }, args.out)


if __name__ == "__main__":
    main()
