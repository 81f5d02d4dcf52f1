"""Memory.status(): one snapshot of what a memory stores and what its view keeps."""

from __future__ import annotations

import warnings

import pytest

from contextwindow import MemoryStatus
from contextwindow.memory import (
    BufferMemory,
    SinkWindowMemory,
    SummaryBufferMemory,
    TokenBufferMemory,
    WindowMemory,
)
from contextwindow.messages import Summary
from contextwindow.samples import sample_conversation
from contextwindow.summarize import FunctionSummarizer, SummarizerWarning
from contextwindow.tokens import TokenCounter

COUNTER = TokenCounter.approximate()
CONVERSATION = sample_conversation(20, seed=3)  # 53 messages, a system prompt first


def filled(memory):
    for message in CONVERSATION:
        memory.add_message(message)
    return memory


def test_conversation_is_the_one_the_numbers_below_assume() -> None:
    assert len(CONVERSATION) == 53 and CONVERSATION[0].role == "system"
    assert COUNTER.count_messages(CONVERSATION) == 2213


@pytest.mark.parametrize(("make", "expected"), [
    (lambda: BufferMemory(counter=COUNTER),
     MemoryStatus(stored=53, kept=53, pinned=0, summarized=0, dropped=0, tokens=2213,
                  budget=None)),
    (lambda: WindowMemory(3, counter=COUNTER),
     MemoryStatus(stored=53, kept=10, pinned=1, summarized=0, dropped=43, tokens=492,
                  budget=None)),
    (lambda: TokenBufferMemory(400, counter=COUNTER),
     MemoryStatus(stored=53, kept=8, pinned=1, summarized=0, dropped=45, tokens=397,
                  budget=400)),
    (lambda: SinkWindowMemory(400, counter=COUNTER),
     MemoryStatus(stored=53, kept=8, pinned=3, summarized=0, dropped=45, tokens=362,
                  budget=400)),
])
def test_budget_memories(make, expected) -> None:
    memory = filled(make())
    status = memory.status()
    assert status == expected
    assert status.kept == len(memory.messages()) and status.tokens == memory.token_count()
    assert status.summarizer_calls == 0


def test_summary_buffer_counts_the_summary_and_its_calls() -> None:
    calls = []

    def summarize(previous, messages):
        calls.append(len(messages))
        return f"{previous or ''} +{len(messages)}".strip()

    memory = filled(SummaryBufferMemory(400, FunctionSummarizer(summarize), counter=COUNTER))
    status = memory.status()
    assert calls == [8, 9, 9, 6, 7, 8]
    assert status == MemoryStatus(
        stored=53, kept=6, pinned=1, summarized=47, dropped=0, tokens=304, budget=400,
        summary_tokens=19, summarizations=6, failures=0, degraded=False,
        summary="+8 +9 +9 +6 +7 +8", last_error=None)
    assert status.summary_tokens == COUNTER.count_message(Summary(status.summary, 1, 48)
                                                          .as_message())
    assert status.kept + 1 == len(memory.messages())  # the summary message is not a kept one
    assert status.tokens == memory.token_count()
    assert status.summarizer_calls == 6


def test_failed_summarizer_with_trim_is_degraded() -> None:
    def down(previous, messages):
        raise RuntimeError("model server is down")

    memory = SummaryBufferMemory(400, FunctionSummarizer(down), counter=COUNTER,
                                 on_error="trim")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SummarizerWarning)
        filled(memory)
    status = memory.status()
    assert (status.summarizations, status.summary, status.summary_tokens) == (0, None, 0)
    assert status.failures == status.summarizer_calls > 0
    assert status.degraded is True and memory.degraded is True
    assert status.summarized == 0 and status.dropped == 53 - status.kept > 0
    assert "RuntimeError: model server is down" in status.last_error


def test_over_budget_view_is_reported_not_raised() -> None:
    memory = TokenBufferMemory(100, counter=COUNTER)
    memory.add("user", "word " * 300)
    assert memory.status() == MemoryStatus(stored=1, kept=0, pinned=0, summarized=0, dropped=1,
                                           tokens=0, budget=100, over_budget=True)
