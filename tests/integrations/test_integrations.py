"""Each ecosystem's own chat loop, written the way its docs write it, on our memory and store.

No network: fake models (langchain-core's, llama-index's MockLLM, a fake OpenAI client that
returns real ``openai`` types), real stores (SQLite here; every durable store in the last test).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from contextwindow import SQLiteStore, TokenBufferMemory, TokenCounter
from contextwindow.adapters import as_message, to_langchain_messages, to_llamaindex_messages
from contextwindow.messages import from_openai

pytest_plugins = ["store_fixtures"]
pytest.register_assert_rewrite("store_fixtures")
from store_fixtures import Backend

COUNTER = TokenCounter.for_model("gpt-4o")


def png_url(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


IMAGE_TURN = [{"type": "text", "text": "What is in this picture?"},
              {"type": "image_url", "image_url": {"url": png_url(1024, 1024), "detail": "high"}}]


# -- OpenAI SDK ---------------------------------------------------------------------------------
class FakeOpenAI:
    """``client.chat.completions.create`` returning real ``ChatCompletion`` objects."""

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.chat = self.completions = self

    def create(self, **request: Any) -> Any:
        from openai.types.chat import ChatCompletion

        self.requests.append(json.loads(json.dumps(request)))  # what would go on the wire
        return ChatCompletion.model_validate({
            "id": "cmpl", "object": "chat.completion", "created": 0, "model": request["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": self.replies.pop(0)}]})


def test_openai_loop_appends_the_response_message(tmp_path) -> None:
    store = SQLiteStore(tmp_path / "chat.db")
    memory = TokenBufferMemory(1200, counter=COUNTER, store=store, session="alice")
    client = FakeOpenAI([
        {"role": "assistant", "content": None, "refusal": None, "annotations": [],
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "describe", "arguments": "{\"size\": 1}"}}]},
        {"role": "assistant", "content": "A white square.", "refusal": None,
         "annotations": [{"type": "url_citation", "url_citation": {
             "start_index": 0, "end_index": 1, "title": "t", "url": "https://example.org"}}]},
    ])
    memory.add("system", "You describe images.")
    memory.add_message({"role": "user", "content": IMAGE_TURN})
    response = client.chat.completions.create(model="gpt-4o", messages=memory.to_openai())
    memory.add_message(response.choices[0].message)  # the SDK object, as the docs append it
    call = response.choices[0].message.tool_calls[0]
    memory.add_message({"role": "tool", "tool_call_id": call.id, "content": "1024 px"})
    response = client.chat.completions.create(model="gpt-4o", messages=memory.to_openai())
    memory.add_message(response.choices[0].message)

    sent = client.requests[1]["messages"]
    assert sent[1]["content"] == IMAGE_TURN  # the parts, verbatim
    assert sent[2]["refusal"] is None and sent[2]["annotations"] == []
    assert COUNTER.count_messages(sent) <= 1200
    assert COUNTER.count_messages(memory.to_openai()) == memory.token_count() <= 1200
    resumed = TokenBufferMemory(1200, counter=COUNTER, store=SQLiteStore(tmp_path / "chat.db"),
                                session="alice")
    expected = response.choices[0].message.model_dump(exclude_unset=True, mode="json")
    assert resumed.to_openai()[-1] == expected
    assert resumed.to_openai() == memory.to_openai()


@pytest.mark.parametrize("dump", ["model_dump", "exclude_unset"])
def test_openai_message_dumps_round_trip(dump) -> None:
    from openai.types.chat import ChatCompletionMessage

    message = ChatCompletionMessage.model_validate({
        "role": "assistant", "content": "hi", "refusal": None, "annotations": [],
        "audio": {"id": "audio_1", "data": "AAAA", "expires_at": 1, "transcript": "hi"},
        "function_call": None, "tool_calls": None})
    raw = message.model_dump(exclude_unset=dump == "exclude_unset")
    assert from_openai(raw).to_openai() == raw
    assert as_message(message).to_openai() == message.model_dump(exclude_unset=True, mode="json")


def test_legacy_function_role_and_future_fields_round_trip() -> None:
    conversation = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": "weather?", "future_field": {"x": [1, 2]}},
        {"role": "assistant", "content": None,
         "function_call": {"name": "weather", "arguments": "{}"}},
        {"role": "function", "name": "weather", "content": "sunny"},
    ]
    kept = TokenBufferMemory(500, counter=COUNTER)
    for message in conversation:
        kept.add_message(message)
    assert kept.to_openai() == conversation
    counted = COUNTER.count_message(conversation[2])
    assert counted == 3 + 1 + 3 + COUNTER.count_text("weather") + COUNTER.count_text("{}")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
parts = st.lists(st.one_of(
    st.builds(lambda text: {"type": "text", "text": text}, st.text(max_size=10)),
    st.builds(lambda url, detail: {"type": "image_url",
                                   "image_url": {"url": url, "detail": detail}},
              st.sampled_from(["https://example.org/a.png", png_url(40, 30)]),
              st.sampled_from(["low", "high", "auto"]))), max_size=4)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.sampled_from(["system", "developer", "user", "assistant"]),
       st.text(max_size=20) | parts,
       st.dictionaries(st.sampled_from(["refusal", "annotations", "audio", "future_field"]),
                       json_values, max_size=3))
def test_any_openai_message_round_trips_through_a_store(role, content, fields) -> None:
    from contextwindow.stores.base import decode_message, encode_message

    raw = {"role": role, "content": content, **fields}
    message = from_openai(raw)
    assert message.to_openai() == raw
    again = decode_message(encode_message(message))
    assert again == message and again.id == message.id and again.to_openai() == raw


# -- LangChain ----------------------------------------------------------------------------------
def langchain_messages() -> list[Any]:
    from langchain_core import messages as lc

    return [
        lc.SystemMessage("sys", id="1"),
        lc.SystemMessage("dev", id="2", additional_kwargs={"__openai_role__": "developer"}),
        lc.HumanMessage([{"type": "text", "text": "a"}, {"type": "text", "text": "b"},
                         {"type": "image", "url": "https://example.org/a.png"}], id="3"),
        lc.AIMessage("", tool_calls=[{"name": "f", "args": {"x": 1}, "id": "c1"}], id="4",
                     response_metadata={"model_name": "m"},
                     usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}),
        lc.ToolMessage("r", tool_call_id="c1", id="5", artifact={"k": 1}, status="error"),
        lc.AIMessage([{"type": "reasoning", "reasoning": "hmm"}, {"type": "text", "text": "ok"}],
                     id="6"),
        lc.AIMessageChunk("hi", id="7", tool_call_chunks=[
            {"name": "g", "args": '{"a": 2}', "id": "c2", "index": 0}]),
        lc.HumanMessageChunk("h", id="8"),
        lc.SystemMessageChunk("s", id="9"),
        lc.ToolMessageChunk("t", tool_call_id="c9", id="10"),
        lc.ChatMessage(role="assistant", content="x", id="11"),
        lc.ChatMessageChunk(role="user", content="c", id="12"),
        lc.FunctionMessage(name="f", content="out", id="13"),
        lc.FunctionMessageChunk(name="f", content="o", id="14"),
    ]


def test_every_langchain_message_type_comes_back_equal_through_a_store() -> None:
    from contextwindow.integrations.langchain import to_langchain
    from contextwindow.stores.base import decode_message, encode_message

    roles = []
    for message in langchain_messages():
        ours = as_message(message)
        roles.append(ours.role)
        assert to_langchain(decode_message(encode_message(ours))) == message
    assert roles == ["system", "developer", "user", "assistant", "tool", "assistant",
                     "assistant", "user", "system", "tool", "assistant", "user", "function",
                     "function"]


def test_every_llamaindex_block_we_read_comes_back_equal_through_a_store() -> None:
    from llama_index.core.base.llms.types import (
        ChatMessage,
        ImageBlock,
        TextBlock,
        ThinkingBlock,
        ToolCallBlock,
    )

    from contextwindow.integrations.llamaindex import to_llamaindex
    from contextwindow.stores.base import decode_message, encode_message

    png = base64.b64decode(png_url(1024, 1024).partition(",")[2])
    originals = [
        ChatMessage(role="system", content="sys"),
        ChatMessage(role="user", blocks=[TextBlock(text="look"), ImageBlock(
            image=png, image_mimetype="image/png", detail="high")]),
        ChatMessage(role="user", blocks=[ImageBlock(url="https://example.org/a.png")]),
        ChatMessage(role="assistant", content=None, additional_kwargs={"tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
        ChatMessage(role="tool", content="r", additional_kwargs={"tool_call_id": "c1",
                                                                   "name": "f"}),
        ChatMessage(role="assistant", blocks=[TextBlock(text="t"), ToolCallBlock(
            tool_call_id="c2", tool_name="g", tool_kwargs={"a": 1})]),
        ChatMessage(role="assistant", blocks=[ThinkingBlock(content="hmm"), TextBlock(text="ok")]),
    ]
    for message in originals:
        assert to_llamaindex(decode_message(encode_message(as_message(message)))) == message
    # the image is counted by OpenAI's rule: 765 + framing + "look"
    assert COUNTER.count_message(originals[1]) == 765 + 3 + 1 + 1


def test_langchain_runnable_with_message_history(tmp_path) -> None:
    from langchain_core.language_models import FakeListChatModel
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory

    from contextwindow.integrations.langchain import ContextWindowChatHistory

    store = SQLiteStore(tmp_path / "chat.db")
    seen: list[list[Any]] = []
    model = FakeListChatModel(responses=[f"reply {k} " + "word " * 30 for k in range(6)])
    prompt = ChatPromptTemplate.from_messages([
        ("system", "You are terse."), MessagesPlaceholder("history"), ("human", "{question}")])
    chain = prompt | (lambda value: seen.append(value.to_messages()) or value) | model
    with warnings.catch_warnings():  # langchain-core 1.x deprecates it; its docs still use it
        warnings.simplefilter("ignore", DeprecationWarning)
        with_history = RunnableWithMessageHistory(
            chain, lambda session: ContextWindowChatHistory(
                TokenBufferMemory(150, counter=COUNTER, store=store, session=session)),
            input_messages_key="question", history_messages_key="history")
    for k in range(6):
        with_history.invoke({"question": f"question {k}"},
                            config={"configurable": {"session_id": "bob"}})

    memory = TokenBufferMemory(150, counter=COUNTER, store=store, session="bob")
    assert len(memory.history()) == 12  # everything stored ...
    history = seen[-1][1:-1]  # ... the prompt got the budgeted view
    assert 0 < len(history) < 10 and isinstance(history[0], HumanMessage)
    assert isinstance(history[-1], AIMessage) and history[-1].content.startswith("reply 4")
    assert COUNTER.count_messages(history) <= 150
    assert isinstance(seen[-1][0], SystemMessage)
    latest = to_langchain_messages(memory.messages())
    assert [m.content for m in latest[-2:]] == ["question 5", history[-1].content.replace(
        "reply 4", "reply 5")]
    assert latest[-3] == history[-1]  # the same object back, id included


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_langgraph_agent_trims_before_each_model_call(tmp_path) -> None:
    from langchain_agents import lookup, recording_model
    from langchain_core.messages import ToolMessage
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from langgraph.prebuilt import create_react_agent

    from contextwindow.integrations.langgraph import invoke, trimming_hook

    model, inputs = recording_model(3)
    agent = create_react_agent(model, [lookup],
                               pre_model_hook=trimming_hook(320, COUNTER, tools=[lookup]))
    store = SQLiteStore(tmp_path / "agent.db")
    for k in range(3):
        memory = TokenBufferMemory(260, counter=COUNTER, store=store, session="carol")
        state = invoke(agent, memory, f"weather in c{k}?")
        assert state["messages"][-1].content == f"it is sunny in c{k}"

    schemas = [convert_to_openai_tool(lookup)]
    assert COUNTER.count_tools(schemas) == 34
    assert all(COUNTER.count_messages(sent, tools=schemas) <= 320 for sent in inputs)
    assert isinstance(inputs[-1][-1], ToolMessage) and inputs[-1][-1].tool_call_id == "call_2"
    stored = TokenBufferMemory(260, counter=COUNTER, store=store, session="carol").history()
    assert [m.role for m in stored] == ["user", "assistant", "tool", "assistant"] * 3
    assert len(inputs[-1]) < len(stored)  # older turns were trimmed away


# -- LlamaIndex ---------------------------------------------------------------------------------
def test_llamaindex_chat_engine_on_our_memory(tmp_path) -> None:
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
    from llama_index.core.chat_engine import SimpleChatEngine
    from llama_index.core.llms import MockLLM

    from contextwindow.integrations.llamaindex import ContextWindowMemory

    store = SQLiteStore(tmp_path / "chat.db")
    memory = ContextWindowMemory.from_defaults(TokenBufferMemory(
        200, counter=COUNTER, store=store, session="dave"))
    seen: list[Any] = []

    class Recording(MockLLM):
        def chat(self, messages: Any, **kwargs: Any) -> Any:
            seen.append(list(messages))
            return super().chat(messages, **kwargs)

    system = "You are a terse assistant. " * 4
    engine = SimpleChatEngine.from_defaults(llm=Recording(max_tokens=20), memory=memory,
                                            system_prompt=system)
    image = ChatMessage(role="user", blocks=[
        TextBlock(text="look"), ImageBlock(url="https://example.org/cat.png", detail="low")])
    memory.put(image)
    memory.put(ChatMessage(role="assistant", content="a cat"))
    for k in range(5):
        engine.chat(f"question {k}")

    assert len(memory.get_all()) == 12 and memory.get_all()[0] == image
    view = memory.get()
    assert COUNTER.count_messages(view) <= 200 and len(view) < 12
    assert view[-2].content == "question 4"
    # the engine measured its system prompt and asked for a view that leaves room for it
    assert seen[-1][0].content == system
    assert COUNTER.count_messages(seen[-1][1:]) <= 200 - COUNTER.count_text(system)
    resumed = TokenBufferMemory(200, counter=COUNTER, store=SQLiteStore(tmp_path / "chat.db"),
                                session="dave")
    assert to_llamaindex_messages(resumed.messages()) == view
    memory.reset()
    assert memory.get_all() == []


def test_llamaindex_agent_on_our_memory(tmp_path) -> None:
    from llama_index.core.agent.workflow import ReActAgent
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback

    from contextwindow.integrations.llamaindex import ContextWindowMemory

    class Scripted(CustomLLM):
        replies: list[str] = []  # noqa: RUF012 (a pydantic field, copied per instance)

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(is_chat_model=False)

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            return CompletionResponse(text=self.replies.pop(0))

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            text = self.replies.pop(0)

            def stream() -> Any:  # the callback wrapper expects a generator
                yield CompletionResponse(text=text, delta=text)

            return stream()

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    llm = Scripted(replies=['Thought: I need to add.\nAction: add\nAction Input: {"a": 2, "b": 3}',
                            "Thought: I can answer.\nAnswer: 5"])
    memory = ContextWindowMemory.from_defaults(TokenBufferMemory(
        2000, counter=COUNTER, store=SQLiteStore(tmp_path / "agent.db"), session="eve"))
    async def chat() -> Any:  # the workflow starts its tasks when called: inside a loop
        return await ReActAgent(tools=[add], llm=llm).run(user_msg="What is 2+3?", memory=memory)

    answer = asyncio.run(chat())
    assert str(answer) == "5"
    stored = TokenBufferMemory(2000, counter=COUNTER, store=SQLiteStore(tmp_path / "agent.db"),
                               session="eve").history()
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[0].content == "What is 2+3?" and "Observation: 5" in stored[1].content


# -- every durable store ------------------------------------------------------------------------
def test_content_parts_and_fields_survive_every_store(durable_store_backend: Backend) -> None:
    from langchain_core.messages import AIMessage

    store, spec = durable_store_backend.new()
    memory = TokenBufferMemory(5000, counter=COUNTER, store=store, session="s")
    memory.add_message({"role": "user", "content": IMAGE_TURN, "id": "m1"})
    memory.add_message(AIMessage("a square", id="m2", response_metadata={"model_name": "x"}))
    memory.add_message({"role": "user", "content": [{"type": "text", "text": "a"},
                                                    {"type": "text", "text": "b"}]})
    again = TokenBufferMemory(5000, counter=COUNTER, store=durable_store_backend.open(spec),
                              session="s")
    assert again.history() == memory.history()
    assert again.to_openai()[0]["content"] == IMAGE_TURN
    assert again.to_openai()[2]["content"] == [{"type": "text", "text": "a"},
                                               {"type": "text", "text": "b"}]
    assert to_langchain_messages(again.messages())[1] == AIMessage(
        "a square", id="m2", response_metadata={"model_name": "x"})


def test_langchain_history_over_every_store(durable_store_backend: Backend) -> None:
    from langchain_core.messages import AIMessageChunk, HumanMessage

    from contextwindow.integrations.langchain import ContextWindowChatHistory

    store, spec = durable_store_backend.new()
    history = ContextWindowChatHistory(TokenBufferMemory(5000, counter=COUNTER, store=store,
                                                         session="s"))
    sent = [HumanMessage([{"type": "text", "text": "see"},
                          {"type": "image", "url": "https://example.org/a.png"}], id="h"),
            AIMessageChunk("a cat", id="a")]
    history.add_messages(sent)
    reopened = ContextWindowChatHistory(TokenBufferMemory(
        5000, counter=COUNTER, store=durable_store_backend.open(spec), session="s"))
    assert reopened.messages == sent
    reopened.clear()
    assert history.memory.store.load("s") == []


# -- recall: older turns quoted before the newest question -------------------------------------
RECALL_FACT = "My sister Ingrid moved to Trondheim last spring."


def recall_memory(store: Any, session: str) -> Any:
    from contextwindow.memory import RecallMemory

    return RecallMemory(300, recall_tokens=100, counter=COUNTER, store=store, session=session,
                        feedback=0)


def test_langchain_history_gets_recalled_turns(tmp_path) -> None:
    from langchain_core.language_models import FakeListChatModel
    from langchain_core.messages import HumanMessage, SystemMessage

    from contextwindow.integrations.langchain import ContextWindowChatHistory
    from contextwindow.window import RECALL_HEADER

    store = SQLiteStore(tmp_path / "chat.db")
    history = ContextWindowChatHistory(recall_memory(store, "ada"))
    model = FakeListChatModel(responses=["Noted."] + [f"reply {k} " + "word " * 20
                                                       for k in range(8)])
    sent = []
    for question in [RECALL_FACT, *(f"tell me about trams {k}" for k in range(7)),
                     "Where did Ingrid move?"]:
        history.add_user_message(question)  # the documented loop: store, read, call, store
        sent.append(history.messages)
        history.add_message(model.invoke(sent[-1]))
    last = sent[-1]
    block = last[-2]
    assert isinstance(block, SystemMessage)
    assert block.content == f"{RECALL_HEADER}\n\nuser: {RECALL_FACT}"
    assert isinstance(last[-1], HumanMessage) and last[-1].content == "Where did Ingrid move?"
    assert RECALL_FACT not in [m.content for m in last if m is not block]  # not in the window
    assert COUNTER.count_messages(last) <= 300
    again = ContextWindowChatHistory(recall_memory(SQLiteStore(tmp_path / "chat.db"), "ada"))
    assert again.messages[:-1] == history.messages[:-1]  # resumed: the same view


def test_llamaindex_chat_engine_gets_recalled_turns(tmp_path) -> None:
    from llama_index.core.chat_engine import SimpleChatEngine
    from llama_index.core.llms import MockLLM

    from contextwindow.integrations.llamaindex import ContextWindowMemory
    from contextwindow.window import RECALL_HEADER

    memory = ContextWindowMemory.from_defaults(recall_memory(SQLiteStore(tmp_path / "c.db"),
                                                             "dave"))
    seen: list[Any] = []

    class Recording(MockLLM):
        def chat(self, messages: Any, **kwargs: Any) -> Any:
            seen.append(list(messages))
            return super().chat(messages, **kwargs)

    system = "You are a terse assistant."
    engine = SimpleChatEngine.from_defaults(llm=Recording(max_tokens=30), memory=memory,
                                            system_prompt=system)
    engine.chat(RECALL_FACT)
    for k in range(7):
        engine.chat(f"tell me about trams {k}")
    engine.chat("Where did Ingrid move?")
    prompt = seen[-1]
    assert prompt[0].content == system and prompt[-1].content == "Where did Ingrid move?"
    block = prompt[-2]
    assert block.role.value == "system" and block.content.startswith(RECALL_HEADER + "\n\n")
    assert f"user: {RECALL_FACT}" in block.content
    assert COUNTER.count_messages(prompt[1:]) <= 300 - COUNTER.count_text(system)
