"""The context assembler: the layout of a context, the recall part, the fitter's modes."""

from __future__ import annotations

import pytest

from contextwindow.errors import BudgetExceededError, ConfigError
from contextwindow.messages import Message, ToolCall
from contextwindow.retrieval import lexical
from contextwindow.tokens import TokenCounter
from contextwindow.window import (
    RECALL_HEADER,
    BoundedCache,
    Context,
    Fitter,
    quote,
    recall_block,
    turn_span,
    unit_span,
)

COUNTER = TokenCounter.for_model("gpt-4o")


def chat() -> list[Message]:
    """A system prompt, a fact, 30 filler turns with a tool call in turn 5, a question."""
    history = [Message(role="system", content="Be brief."),
               Message(role="user", content="My cat is called Pixel.", timestamp="2023-05-08"),
               Message(role="assistant", content="Lovely name.", timestamp="2023-05-08")]
    for i in range(30):
        history.append(Message(role="user", content=f"Gardening idea {i}, please."))
        if i == 5:
            call = ToolCall(id="c1", name="weather", arguments='{"city": "Leeds"}')
            history += [Message(role="assistant", tool_calls=(call,)),
                        Message(role="tool", content="rain", tool_call_id="c1")]
        history.append(Message(role="assistant", content=f"Idea {i}: tomatoes in the sun."))
    history.append(Message(role="user", content="What is my cat called?"))
    return history


def test_context_places_summary_after_the_head_and_the_block_before_the_newest_turn() -> None:
    history = chat()
    summary = Message(role="system", content="S")
    block = Message(role="system", content="R")
    at = len(history) - 1
    context = Context(1, at - 2, 0, summary=summary, recalled=block, recalled_at=at)
    shown = context.messages(history)
    assert shown == [history[0], summary, history[at - 2], history[at - 1], block, history[at]]
    assert context.select(history) == [history[0], *history[at - 2:]]
    assert context.dropped == at - 3


def test_turn_span_is_the_whole_exchange_with_tool_results() -> None:
    history = chat()
    tool = next(k for k, m in enumerate(history) if m.role == "tool")
    begin, end = turn_span(history, tool, 1, len(history))
    assert [m.role for m in history[begin:end]] == ["user", "assistant", "tool", "assistant"]
    assert turn_span(history, 2, 1, len(history)) == (1, 3)
    assert turn_span(history, 2, 2, len(history)) == (2, 3)  # clipped to the range


def test_quote_shows_the_date_and_the_calls() -> None:
    assert quote(Message(role="user", content="hi", timestamp="2023-05-08")) == (
        "[8 May 2023] user: hi")
    assert quote(Message(role="user", content="hi", timestamp="2023-05-08T14:05:00")) == (
        "[8 May 2023 14:05] user: hi")
    call = ToolCall(id="c", name="f", arguments="{}")
    assert quote(Message(role="assistant", tool_calls=(call,))) == "assistant: called f({})"


def test_unit_span_keeps_a_call_with_its_results() -> None:
    history = chat()
    tool = next(k for k, m in enumerate(history) if m.role == "tool")
    assert unit_span(history, tool, 1, len(history)) == (tool - 1, tool + 1)
    assert unit_span(history, tool - 1, 1, len(history)) == (tool - 1, tool + 1)
    assert unit_span(history, 2, 1, len(history)) == (2, 3)


def test_recall_block_keeps_whole_units_in_order_within_its_limit() -> None:
    history = chat()
    tool = next(k for k, m in enumerate(history) if m.role == "tool")
    block, shown, tokens = recall_block(history, [40, tool, 1, 2], 1, 50, 10_000,
                                        COUNTER.count_message)
    assert block is not None and block.role == "system"
    assert block.content.startswith(RECALL_HEADER)
    assert shown == (1, 2, tool - 1, tool, 40)  # the result came back with its call
    assert tokens == COUNTER.count_message(block)
    assert block.content.index("Pixel") < block.content.index("Idea")  # said first, shown first
    # A limit too small for any turn: nothing.
    assert recall_block(history, [1], 1, 50, 5, COUNTER.count_message) == (None, (), 0)
    # Indices outside [lo, hi) are never recalled.
    assert recall_block(history, [60], 1, 50, 10_000, COUNTER.count_message)[0] is None


def test_the_recall_mode_brings_back_the_fact_within_the_budget() -> None:
    history = chat()
    fitter = Fitter(COUNTER, 400, mode="recall", rankers=lexical.ranker)
    fitted = fitter.fit(history, 100)
    assert fitted.tokens == COUNTER.count_messages(fitted.messages) <= 300
    assert fitted.messages[-1] == history[-1]
    block = fitted.messages[-2]
    assert block.content.startswith(RECALL_HEADER)
    assert "[8 May 2023] user: My cat is called Pixel." in block.content
    assert history[1] not in fitted.messages  # quoted, not shown verbatim


def test_the_fitter_refuses_unknown_modes_and_missing_parts() -> None:
    with pytest.raises(ConfigError, match="unknown policy 'pin'"):
        Fitter(COUNTER, 400, mode="pin")
    with pytest.raises(ConfigError, match="needs a ranker"):
        Fitter(COUNTER, 400, mode="recall")
    with pytest.raises(ConfigError, match="needs a summary source"):
        Fitter(COUNTER, 400, mode="summary")
    with pytest.raises(BudgetExceededError, match="maximum context length is 64 tokens"):
        Fitter(COUNTER, 64, mode="none").fit(chat(), 10)
    assert Fitter(COUNTER, 400, mode="sinks").keep_first == 2


def test_bounded_cache_keeps_the_most_recently_used() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)
    with pytest.raises(ConfigError):
        BoundedCache(0)
