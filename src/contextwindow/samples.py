"""Synthetic conversations for demos, tests and benchmarks (deterministic for a given seed).

They mimic an assistant-with-tools chat: a system prompt, user turns of varied length, answers,
and every ``tool_every``-th turn an assistant tool call followed by its results.
"""

from __future__ import annotations

import json
import random

from .messages import Message, ToolCall

_TOPICS = ("the quarterly budget", "a flight to Lisbon", "the garden shed", "a Python traceback",
           "the team offsite", "a recipe for bread", "the tax return", "a job interview",
           "the new laptop", "a birthday present", "the server migration", "a reading list")
_WORDS = ("please", "could", "you", "check", "whether", "the", "numbers", "still", "add", "up",
          "and", "tell", "me", "what", "changed", "since", "last", "week", "because", "I",
          "need", "a", "clear", "answer", "before", "the", "meeting", "tomorrow", "morning")


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."


def sample_conversation(turns: int, *, seed: int = 0, tool_every: int = 5,
                        system: str | None = "You are a helpful assistant.") -> list[Message]:
    """``turns`` user turns (plus tool calls every ``tool_every`` turns; 0 disables them)."""
    rng = random.Random(seed)
    out = [Message(role="system", content=system)] if system else []
    for turn in range(turns):
        topic = rng.choice(_TOPICS)
        out.append(Message(role="user", content=f"About {topic}: " + " ".join(
            _sentence(rng, 4, 14) for _ in range(rng.randint(1, 3)))))
        if tool_every and turn % tool_every == tool_every - 1:
            calls = tuple(ToolCall(id=f"call_{turn}_{k}", name="search",
                                   arguments=json.dumps({"query": topic, "page": k}))
                          for k in range(rng.randint(1, 2)))
            out.append(Message(role="assistant", tool_calls=calls))
            out.extend(Message(role="tool", tool_call_id=call.id,
                               content=json.dumps({"results": [_sentence(rng, 6, 12)
                                                               for _ in range(3)]}))
                       for call in calls)
        out.append(Message(role="assistant", content=" ".join(
            _sentence(rng, 6, 18) for _ in range(rng.randint(1, 4)))))
    return out
