"""Brute-force oracles for the trimming rules, written from the rules' statement alone.

They call nothing of ``contextwindow.trim`` (not ``pinned_count``, not ``plan_trim``): a bug
there cannot hide in the oracle too. Costs come from ``TokenCounter.count_messages`` on each
whole candidate, which ``tests/test_tokens.py`` pins separately.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SYSTEM_ROLES = ("system", "developer")


def pinned_head(messages: Sequence[Any], keep_first: int, keep_system: bool = True) -> int:
    """How many leading messages are pinned: the leading system/developer messages, then
    ``keep_first`` more, then any tool results that would otherwise lose their call."""
    roles = [message.role for message in messages]
    head = 0
    if keep_system:
        while head < len(roles) and roles[head] in SYSTEM_ROLES:
            head += 1
    head = min(len(roles), head + keep_first)
    while head < len(roles) and roles[head] == "tool":
        head += 1
    return head


def best_context(messages: Sequence[Any], budget: int, counter: Any, keep_first: int = 0
                 ) -> list[Any] | None:
    """Every candidate context, tried longest first: all messages, else the pinned head plus a
    suffix that starts at a user message. The first that fits the budget, or None when none does
    (``trim`` must then raise BudgetExceededError)."""
    messages = list(messages)
    head = pinned_head(messages, keep_first)
    candidates = [messages] + [messages[:head] + messages[start:]
                               for start in range(head, len(messages))
                               if messages[start].role == "user"]
    for candidate in candidates:
        if counter.count_messages(candidate) <= budget:
            return candidate
    return None
