"""Native async on the memories, on every store (real Redis and PostgreSQL): ``aadd`` /
``aadd_message`` / ``amessages``, and the loops built on them (LangGraph ``ainvoke``, the
LlamaIndex memory's ``aget`` / ``aput``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contextwindow.memory import SummaryBufferMemory, TokenBufferMemory
from contextwindow.stores.aio import is_native
from contextwindow.summarize import FunctionSummarizer
from contextwindow.tokens import TokenCounter

# The fixtures (store_backend) come from tests/store_fixtures.py.
pytest_plugins = ["store_fixtures"]
pytest.register_assert_rewrite("store_fixtures")
from store_fixtures import Backend

COUNTER = TokenCounter.approximate()
NATIVE = {"inmemory": False, "sqlite": False, "redis": True, "postgres": True}


def test_aadd_stores_in_order_and_the_view_matches(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    assert is_native(store, "append") is NATIVE[store_backend.kind]

    async def chat() -> list[Any]:
        memory = TokenBufferMemory(120, counter=COUNTER, store=store, session="amy")
        await memory.aadd("system", "be brief")
        # concurrent writers on one memory are serialised, in the order they were started
        await asyncio.gather(*(memory.aadd_message(
            {"role": "user" if k % 2 == 0 else "assistant", "content": f"turn {k} " * 8,
             "id": f"m{k}"}) for k in range(12)))
        return await memory.amessages()

    view = asyncio.run(chat())
    again = asyncio.run(_reopen(store))
    stored = TokenBufferMemory(120, counter=COUNTER, store=store, session="amy")
    assert [m.id for m in stored.history()[1:]] == [f"m{k}" for k in range(12)]
    assert view == again == stored.messages()
    assert view[0].content == "be brief" and view[-1].id == "m11"
    assert COUNTER.count_messages(view) <= 120 < COUNTER.count_messages(stored.history())


async def _reopen(store: Any) -> list[Any]:
    """A second event loop (asyncio.run again): the async client is the new loop's."""
    memory = TokenBufferMemory(120, counter=COUNTER, store=store, session="amy")
    return await memory.amessages()


def test_a_summary_memory_awaits_its_store_too(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    summarizer = FunctionSummarizer(lambda previous, messages: f"{len(messages)} turns")

    async def chat() -> SummaryBufferMemory:
        memory = SummaryBufferMemory(200, summarizer, max_summary_tokens=60, counter=COUNTER,
                                     store=store, session="bo")
        for k in range(10):
            await memory.aadd("user" if k % 2 == 0 else "assistant", f"message {k} " * 12)
        return memory

    memory = asyncio.run(chat())
    reloaded = SummaryBufferMemory(200, summarizer, max_summary_tokens=60, counter=COUNTER,
                                   store=store, session="bo")
    assert memory.summarizations >= 1
    assert store.load_summary("bo") == reloaded._summary
    assert reloaded.messages() == memory.messages()
    assert len(reloaded.history()) == 10


def test_langgraph_ainvoke_on_a_memory(store_backend: Backend) -> None:
    from langchain.agents import create_agent
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool

    from contextwindow.integrations.langgraph import ainvoke

    @tool
    def lookup(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    class ToolModel(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    replies = []
    for k in range(2):
        replies += [AIMessage("", tool_calls=[{"name": "lookup", "args": {"city": f"c{k}"},
                                               "id": f"call_{k}"}]),
                    AIMessage(f"it is sunny in c{k}")]
    agent = create_agent(ToolModel(messages=iter(replies)), [lookup])
    store, _ = store_backend.new()

    async def run() -> list[str]:
        answers = []
        for k in range(2):
            memory = TokenBufferMemory(400, counter=COUNTER, store=store, session="cy")
            state = await ainvoke(agent, memory, f"weather in c{k}?")
            answers.append(state["messages"][-1].content)
        return answers

    assert asyncio.run(run()) == ["it is sunny in c0", "it is sunny in c1"]
    stored = TokenBufferMemory(400, counter=COUNTER, store=store, session="cy").history()
    assert [m.role for m in stored] == ["user", "assistant", "tool", "assistant"] * 2
    assert stored[2].content == "sunny in c0" and stored[2].tool_call_id == "call_0"


def test_llamaindex_achat_uses_aget_and_aput(store_backend: Backend) -> None:
    from llama_index.core.chat_engine import SimpleChatEngine
    from llama_index.core.llms import MockLLM

    from contextwindow.integrations.llamaindex import ContextWindowMemory

    store, _ = store_backend.new()
    memory = ContextWindowMemory.from_defaults(TokenBufferMemory(
        150, counter=COUNTER, store=store, session="di"))
    calls: list[str] = []

    class Watched(ContextWindowMemory):
        async def aget(self, *args: Any, **kwargs: Any) -> Any:
            calls.append("aget")
            return await super().aget(*args, **kwargs)

        async def aput(self, message: Any) -> None:
            calls.append("aput")
            await super().aput(message)

    watched = Watched(memory=memory.memory)
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=12), memory=watched)

    async def chat() -> None:
        for k in range(6):
            await engine.achat(f"question {k} " + "padding " * 10)

    asyncio.run(chat())
    assert "aget" in calls and calls.count("aput") >= 6
    stored = TokenBufferMemory(150, counter=COUNTER, store=store, session="di").history()
    assert [m.role for m in stored] == ["user", "assistant"] * 6
    assert stored[10].content.startswith("question 5")
    view = asyncio.run(watched.aget())
    assert view == watched.get() and len(view) < 12
