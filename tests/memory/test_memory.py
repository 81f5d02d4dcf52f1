"""Memories: budgeted views over a stored history that is never deleted by trimming."""

from __future__ import annotations

import pytest
from oracles import best_context

from contextwindow.errors import BudgetExceededError, ConfigError, InvalidMessageError, StoreError
from contextwindow.memory import BufferMemory, SinkWindowMemory, TokenBufferMemory, WindowMemory
from contextwindow.messages import Message
from contextwindow.samples import sample_conversation
from contextwindow.stores import InMemoryStore, SQLiteStore
from contextwindow.tokens import TokenCounter

COUNTER = TokenCounter.approximate()
CONVERSATION = sample_conversation(60, seed=3)


def filled(memory):
    for message in CONVERSATION:
        memory.add_message(message)
    return memory


def test_buffer_keeps_everything() -> None:
    memory = filled(BufferMemory(counter=COUNTER))
    assert memory.messages() == CONVERSATION
    assert memory.token_count() == COUNTER.count_messages(CONVERSATION)


def test_window_keeps_last_k_turns_and_the_system_prompt() -> None:
    memory = filled(WindowMemory(3, counter=COUNTER))
    view = memory.messages()
    users = [i for i, m in enumerate(CONVERSATION) if m.role == "user"]
    assert view == [CONVERSATION[0], *CONVERSATION[users[-3]:]]
    assert sum(m.role == "user" for m in view) == 3
    assert memory.token_count() == COUNTER.count_messages(view)


@pytest.mark.parametrize("budget", [150, 400, 1000, 5000])
def test_token_buffer_equals_the_brute_force_context_at_every_step(budget: int) -> None:
    """The oracle is tests/oracles.py, not trim(): trim runs the same plan_trim as the memory."""
    memory = TokenBufferMemory(budget, counter=COUNTER)
    for end, message in enumerate(CONVERSATION, start=1):
        memory.add_message(message)
        if message.role == "tool":
            continue  # mid-unit: the conversation is not complete yet
        expected = best_context(CONVERSATION[:end], budget, COUNTER)
        if expected is None:
            with pytest.raises(BudgetExceededError):
                memory.messages()
            continue
        assert memory.messages() == expected
        assert memory.token_count() == COUNTER.count_messages(expected) <= budget
    assert memory.history() == CONVERSATION  # trimming never deletes


def test_sink_window_pins_the_first_messages() -> None:
    memory = filled(SinkWindowMemory(400, counter=COUNTER, keep_first=2))
    view = memory.messages()
    assert view[:3] == CONVERSATION[:3]
    assert len(view) < len(CONVERSATION)
    assert memory.token_count() <= 400


def test_over_budget_raises_and_keeps_history() -> None:
    memory = TokenBufferMemory(60, counter=COUNTER)
    memory.add("system", "s" * 100)
    memory.add("user", "u" * 200)
    with pytest.raises(BudgetExceededError):
        memory.messages()
    assert [m.role for m in memory.history()] == ["system", "user"]


def test_tool_results_must_answer_pending_calls() -> None:
    memory = BufferMemory(counter=COUNTER)
    memory.add("user", "weather in Oslo?")
    with pytest.raises(InvalidMessageError, match="does not answer a pending call"):
        memory.add("tool", "rain", tool_call_id="nope")
    memory.add("assistant", None, tool_calls=[
        {"id": "a", "type": "function", "function": {"name": "w", "arguments": "{}"}},
        {"id": "b", "type": "function", "function": {"name": "w", "arguments": "{}"}}])
    memory.add("tool", "rain", tool_call_id="a")
    with pytest.raises(InvalidMessageError, match=r"still need their tool results"):
        memory.add("assistant", "It rains.")
    memory.add("tool", "wind", tool_call_id="b")
    memory.add("assistant", "Rain and wind.")
    assert len(memory) == 5


def test_bad_input_is_rejected_and_nothing_is_stored() -> None:
    store = InMemoryStore()
    memory = BufferMemory(counter=COUNTER, store=store, session="s")
    memory.add("user", "hello")
    for bad in ({"role": "wizard", "content": "x"}, {"role": "user", "content": 5},
                {"role": "user"}, {"role": "user", "content": [{"text": "a part without a type"}]}):
        with pytest.raises(InvalidMessageError):
            memory.add_message(bad)
    with pytest.raises(ConfigError):
        TokenBufferMemory(0)
    with pytest.raises(ConfigError):
        WindowMemory(0)
    assert [m.content for m in store.load("s")] == ["hello"]


def test_failed_store_write_leaves_memory_unchanged() -> None:
    class FailingStore(InMemoryStore):
        def append(self, session: str, message: Message) -> None:
            raise StoreError("disk full")

    memory = BufferMemory(counter=COUNTER, store=FailingStore())
    with pytest.raises(StoreError):
        memory.add("user", "hello")
    assert memory.history() == [] and memory.token_count() == COUNTER.overhead(has_system=False)


def test_sqlite_session_is_restored_exactly(tmp_path) -> None:
    path = tmp_path / "chat.db"
    first = filled(SinkWindowMemory(500, counter=COUNTER, store=SQLiteStore(path), session="ann"))
    other = BufferMemory(counter=COUNTER, store=first.store, session="bob")
    other.add("user", "I am Bob")
    first.store.close()

    store = SQLiteStore(path)
    reopened = SinkWindowMemory(500, counter=COUNTER, store=store, session="ann")
    assert reopened.history() == first.history()
    assert [m.id for m in reopened.history()] == [m.id for m in first.history()]
    assert reopened.messages() == first.messages()
    assert reopened.token_count() == first.token_count()
    bob = BufferMemory(counter=COUNTER, store=store, session="bob")
    assert [m.content for m in bob.history()] == ["I am Bob"]
    assert store.sessions() == ["ann", "bob"]


def test_clear_deletes_only_this_session(tmp_path) -> None:
    store = SQLiteStore(tmp_path / "chat.db")
    a = BufferMemory(counter=COUNTER, store=store, session="a")
    b = BufferMemory(counter=COUNTER, store=store, session="b")
    a.add("user", "one")
    b.add("user", "two")
    a.clear()
    assert a.history() == [] and store.load("a") == []
    assert [m.content for m in store.load("b")] == ["two"]
