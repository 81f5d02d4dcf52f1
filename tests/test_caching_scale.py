"""A cache report replays, it does not re-count: every message is priced a bounded number of
times whatever the history's length, the named trimmers give exactly what ``trim`` gives on
each prefix, and a 44,000-message history replays to the end."""

from __future__ import annotations

from typing import Any

import pytest

from contextwindow.caching import replay, trimmer
from contextwindow.errors import InvalidMessageError
from contextwindow.messages import Message, ToolCall
from contextwindow.samples import sample_conversation
from contextwindow.tokens import TokenCounter
from contextwindow.trim import CachePolicy, Prefix, trim


def history(n: int) -> list[Message]:
    """The first ``n`` messages of a sample chat, ending at a whole unit."""
    conversation = sample_conversation(n // 2 + 10, seed=4)[:n]
    while conversation[-1].role == "tool" or conversation[-1].tool_calls:
        conversation.pop()
    return conversation


def last_request(conversation: list[Message]) -> int:
    """The index of the last assistant message: the trimmer sees the messages before it."""
    return max(k for k, m in enumerate(conversation) if m.role == "assistant")


def counted() -> tuple[TokenCounter, list[int]]:
    """An approximate counter that records how often ``count_message`` is called."""
    counter, calls = TokenCounter.approximate(), [0]
    count_message = counter.count_message

    def recording(message: Any) -> int:
        calls[0] += 1
        return count_message(message)

    counter.count_message = recording  # type: ignore[method-assign]
    return counter, calls


@pytest.mark.parametrize("name", ["newest", "cache"])
def test_count_calls_grow_linearly(name: str) -> None:
    for n in (1_000, 4_000):
        conversation = history(n)
        counter, calls = counted()
        report = replay(conversation, trimmer(name, 1500, counter), counter, 1500, name=name)
        assert len(report.requests) == sum(
            m.role == "assistant" for m in conversation[1:])
        # once by the replay, once by the trimmer (up to the last request): no re-counting
        assert calls[0] == len(conversation) + last_request(conversation)


@pytest.mark.parametrize("name", ["newest", "cache"])
def test_the_named_trimmers_are_trim_on_each_prefix(name: str) -> None:
    conversation = sample_conversation(80, seed=2)
    counter = TokenCounter.approximate()
    policy = CachePolicy() if name == "cache" else None
    growing = trimmer(name, 700, counter)
    for k in range(1, len(conversation) + 1):
        if conversation[k - 1].role == "tool" or conversation[k - 1].tool_calls:
            continue  # a prefix ending before a call's results: not a request
        assert growing(Prefix(conversation, k)) == trim(conversation[:k], 700, counter,
                                                        cache_policy=policy)
    other = sample_conversation(30, seed=9)  # another history: starts over
    assert growing(other) == trim(other, 700, counter, cache_policy=policy)


def test_a_broken_history_is_refused_where_trim_refuses() -> None:
    broken = [Message(role="user", content="hi"),
              Message(role="assistant", tool_calls=(ToolCall("c1", "f", "{}"),)),
              Message(role="user", content="no result came")]
    counter = TokenCounter.approximate()
    with pytest.raises(InvalidMessageError, match="still need their tool results"):
        trim(broken, 1000, counter)
    with pytest.raises(InvalidMessageError, match="still need their tool results"):
        trimmer("newest", 1000, counter)(broken)
    # dropped by the budget, the broken stretch does not matter (as for trim)
    tail = [*broken, Message(role="assistant", content="ok"),
            Message(role="user", content="x " * 60)]
    assert trimmer("newest", 40, counter)(tail) == trim(tail, 40, counter) == tail[-1:]


def test_a_44k_message_history_replays_to_the_end() -> None:
    conversation = history(44_000)
    counter, calls = counted()
    reports = [replay(conversation, trimmer(name, 4000, counter), counter, 4000, name=name)
               for name in ("newest", "cache")]
    requests = sum(m.role == "assistant" for m in conversation[1:])
    assert [len(r.requests) for r in reports] == [requests, requests]
    assert all(r.prompt_tokens <= 4000 for report in reports for r in report.requests)
    assert calls[0] == 2 * (len(conversation) + last_request(conversation))
    assert reports[1].reuse > 0.9
    assert reports[0].reuse < 0.5
