"""ContextWindowMiddleware in a real ``langchain.agents.create_agent`` loop with a tool call:
every model call gets a fitted context (trimmed, or a memory's view with recalled turns), the
agent's state keeps every message."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_agents import lookup, recording_model
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from contextwindow.errors import ConfigError
from contextwindow.integrations.middleware import ContextWindowMiddleware
from contextwindow.memory import RecallMemory
from contextwindow.tokens import TokenCounter

COUNTER = TokenCounter.approximate()
SYSTEM = "You answer weather questions."


def agent_with(middleware: ContextWindowMiddleware, turns: int) -> tuple[Any, list[list[Any]]]:
    model, inputs = recording_model(turns)
    return create_agent(model, [lookup], system_prompt=SYSTEM, middleware=[middleware]), inputs


def test_each_model_call_is_trimmed_the_state_keeps_everything() -> None:
    agent, inputs = agent_with(ContextWindowMiddleware(320, COUNTER), 3)
    messages: list[Any] = []
    for k in range(3):
        state = agent.invoke({"messages": [*messages, HumanMessage(f"weather in c{k}?")]})
        messages = state["messages"]
        assert messages[-1].content == f"it is sunny in c{k}"
    assert [type(m).__name__ for m in messages] == [
        "HumanMessage", "AIMessage", "ToolMessage", "AIMessage"] * 3
    schemas = [convert_to_openai_tool(lookup)]
    assert len(inputs) == 6
    assert all(isinstance(sent[0], SystemMessage) and sent[0].content == SYSTEM
               for sent in inputs)
    assert all(COUNTER.count_messages(sent, tools=schemas) <= 320 for sent in inputs)
    last = inputs[-1]
    assert isinstance(last[-1], ToolMessage) and last[-1].tool_call_id == "call_2"
    assert [m.content for m in last if isinstance(m, HumanMessage)] == [  # turn 0 dropped
        "weather in c1?", "weather in c2?"]
    untrimmed = COUNTER.count_messages([SystemMessage(SYSTEM), *messages[:-1]], tools=schemas)
    assert untrimmed > 320  # so the trimming above was needed


def test_a_recall_memory_brings_back_an_older_turn() -> None:
    memory = RecallMemory(260, recall_tokens=120, counter=COUNTER)
    agent, inputs = agent_with(ContextWindowMiddleware(memory=memory), 4)
    messages: list[Any] = [HumanMessage("my locker code is 4417, remember it"),
                           AIMessage("noted")]
    for k in range(3):
        messages = agent.invoke({"messages": [*messages, HumanMessage(f"weather in c{k}?")]}
                                )["messages"]
    messages = agent.invoke({"messages": [*messages, HumanMessage(
        "what was my locker code?")]})["messages"]
    assert len(memory.history()) == len(messages) - 1  # all but the final reply (no call after)
    sent = "\n".join(str(m.content) for m in inputs[-2])
    assert "4417" in sent  # recalled: the turn is long out of the window
    assert "my locker code is 4417" not in "\n".join(
        str(m.content) for m in inputs[-3][1:])  # the call before it had it neither verbatim
    assert "4417" in str(memory.history()[0].content)


def test_the_async_agent_is_fitted_too() -> None:
    agent, inputs = agent_with(ContextWindowMiddleware(320, COUNTER), 1)
    state = asyncio.run(agent.ainvoke({"messages": [HumanMessage("weather in c0?")]}))
    assert state["messages"][-1].content == "it is sunny in c0"
    assert len(inputs) == 2 and isinstance(inputs[1][-1], ToolMessage)


def test_budget_or_memory() -> None:
    with pytest.raises(ConfigError, match="max_tokens or a memory"):
        ContextWindowMiddleware()
    with pytest.raises(ConfigError, match="not both"):
        ContextWindowMiddleware(100, memory=RecallMemory(200, counter=COUNTER))
