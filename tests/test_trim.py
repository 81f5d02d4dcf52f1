"""Trimming: never over budget, maximal, never splits tool calls, pinned head always kept."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from oracles import best_context, pinned_head
from strategies import conversations as random_conversations

from contextwindow.errors import BudgetExceededError, ConfigError
from contextwindow.messages import Message, ToolCall
from contextwindow.tokens import TokenCounter
from contextwindow.trim import trim

COUNTER = TokenCounter.approximate()


def conversations() -> st.SearchStrategy[list[Message]]:
    return random_conversations(max_turns=12, max_chars=120, max_calls=3)


def cost(messages: list[Message]) -> int:
    return COUNTER.count_messages(messages)


# A fixed conversation for the exact budget edges: a system prompt, a tool round trip, turns.
EDGE = [
    Message(role="system", content="be brief"),
    Message(role="user", content="weather in oslo"),
    Message(role="assistant", tool_calls=(ToolCall("c1", "f", "{}"), ToolCall("c2", "f", "{}"))),
    Message(role="tool", tool_call_id="c1", content="rain all day"),
    Message(role="tool", tool_call_id="c2", content="wind"),
    Message(role="assistant", content="rain and wind"),
    Message(role="user", content="and tomorrow"),
    Message(role="assistant", content="sun"),
    Message(role="user", content="thanks"),
]
EDGE_ALL = cost(EDGE)  # everything fits at exactly this budget, not at one less
EDGE_TAIL = cost([EDGE[0], *EDGE[6:]])  # the system prompt + the last two turns
EDGE_PINNED_TAIL = cost([*EDGE[:5], EDGE[8]])  # keep_first=2 pins up to the whole tool unit


def test_edge_budgets_are_what_the_examples_claim() -> None:
    assert (EDGE_ALL, EDGE_TAIL, EDGE_PINNED_TAIL) == (78, 30, 54)
    assert trim(EDGE, EDGE_TAIL, COUNTER) == [EDGE[0], *EDGE[6:]]
    assert trim(EDGE, EDGE_PINNED_TAIL, COUNTER, keep_first=2) == [*EDGE[:5], EDGE[8]]


def oracle(messages: list[Message], budget: int, keep_first: int) -> list[Message] | None:
    return best_context(messages, budget, COUNTER, keep_first)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(conversations(), st.integers(1, 600), st.integers(0, 3))
@example(EDGE, EDGE_ALL, 0)
@example(EDGE, EDGE_ALL - 1, 0)
@example(EDGE, EDGE_TAIL, 0)
@example(EDGE, EDGE_TAIL - 1, 0)
@example(EDGE, EDGE_PINNED_TAIL, 2)
@example(EDGE, EDGE_PINNED_TAIL - 1, 2)
def test_trim_matches_brute_force_and_never_exceeds_budget(messages, budget, keep_first) -> None:
    expected = oracle(messages, budget, keep_first)
    if expected is None:
        with pytest.raises(BudgetExceededError) as info:
            trim(messages, budget, COUNTER, keep_first=keep_first)
        assert info.value.budget == budget and info.value.required > budget
        return
    kept = trim(messages, budget, COUNTER, keep_first=keep_first)
    assert kept == expected
    assert cost(kept) <= budget
    # tool calls and their results are kept or dropped together
    kept_ids = {id(m) for m in kept}
    for index, message in enumerate(messages):
        if message.role == "tool":
            owner = max(i for i in range(index) if messages[i].tool_calls)
            assert (id(message) in kept_ids) == (id(messages[owner]) in kept_ids)


@pytest.mark.parametrize("keep_first", [0, 1, 2, 3])
def test_every_budget_up_to_the_whole_conversation_matches_brute_force(keep_first: int) -> None:
    """Exhaustive at every budget edge of EDGE: an off-by-one anywhere fails deterministically."""
    for budget in range(1, EDGE_ALL + 2):
        expected = oracle(EDGE, budget, keep_first)
        if expected is None:
            with pytest.raises(BudgetExceededError):
                trim(EDGE, budget, COUNTER, keep_first=keep_first)
        else:
            assert trim(EDGE, budget, COUNTER, keep_first=keep_first) == expected, budget


def test_the_oracle_pins_the_documented_head() -> None:
    assert [pinned_head(EDGE, k) for k in range(6)] == [1, 2, 5, 5, 5, 6]
    assert pinned_head(EDGE, 0, keep_system=False) == 0
    assert oracle(EDGE, EDGE_ALL, 0) == EDGE and oracle(EDGE, EDGE_ALL - 1, 0) != EDGE


def test_pinned_head_and_window_start() -> None:
    system = {"role": "system", "content": "You are terse."}
    intro = {"role": "user", "content": "My name is Ingrid and my locker code is 4817."}
    ack = {"role": "assistant", "content": "Noted."}
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 20}
             for i in range(40)]
    conversation = [system, intro, ack, *turns]
    budget = 300
    kept = trim(conversation, budget, COUNTER, keep_first=2)
    assert kept[:3] == [system, intro, ack]  # the very same dict objects come back
    assert all(a is b for a, b in zip(kept, conversation[:3]))
    assert kept[3]["role"] == "user"
    assert kept[-1] is conversation[-1]
    assert COUNTER.count_messages(kept) <= budget
    # maximal: one more turn (user + assistant) would not fit
    first_kept = conversation.index(kept[3])
    bigger = [*kept[:3], *conversation[first_kept - 2:]]
    assert COUNTER.count_messages(bigger) > budget


def test_budget_error_has_figures() -> None:
    conversation = [{"role": "system", "content": "x" * 400},
                    {"role": "user", "content": "y" * 400}]
    with pytest.raises(BudgetExceededError) as info:
        trim(conversation, 150, COUNTER)
    error = info.value
    assert (error.budget, error.pinned, error.required) == (150, 3 + 2 + 100 + 3, 108 + 3 + 1 + 100)
    assert "150" in str(error) and "212 in all" in str(error)


def test_scan_stops_at_the_budget() -> None:
    """Linear in what is kept: a 10,000-message history is not priced in full."""
    priced: list[int] = []

    def price(message: Message) -> int:
        priced.append(1)
        return 10

    counter = TokenCounter("ten", len, price, reply_priming=3)
    history = [Message(role="user" if i % 2 == 0 else "assistant", content=str(i))
               for i in range(10_000)]
    kept = trim(history, 503, counter)
    assert len(kept) == 50 and kept[0].content == "9950"
    assert len(priced) == 51  # 50 kept + the first that did not fit


def test_accepts_langchain_messages() -> None:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    conversation = [
        SystemMessage("be brief"), HumanMessage("weather?"),
        AIMessage("", tool_calls=[{"id": "t1", "name": "weather", "args": {"city": "Oslo"}}]),
        ToolMessage("rain", tool_call_id="t1"), AIMessage("It rains."),
        HumanMessage("and tomorrow?"), AIMessage("Sun."),
    ]
    kept = trim(conversation, 40, COUNTER)
    assert kept == [conversation[0], *conversation[5:]]


def test_bad_budget_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        trim([{"role": "user", "content": "hi"}], 0, COUNTER)
    with pytest.raises(ConfigError):
        trim([{"role": "user", "content": "hi"}], 10, COUNTER, keep_first=-1)
