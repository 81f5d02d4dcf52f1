"""Each ecosystem's own chat loop, written the way its docs write it, on our memory and store.

No network: fake models (langchain-core's, llama-index's MockLLM, a fake OpenAI client that
returns real ``openai`` types), real stores (SQLite here; every durable store in the last test).
"""

from __future__ import annotations

import base64
import io
import json
import warnings
from typing import Any

import pytest
from PIL import Image

from contextwindow import SQLiteStore, TokenBufferMemory, TokenCounter
from contextwindow.messages import as_message, from_openai

pytest_plugins = ["store_fixtures"]
pytest.register_assert_rewrite("store_fixtures")
from store_fixtures import Backend  # noqa: E402

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


# -- LangChain ----------------------------------------------------------------------------------
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
    latest = memory.to_langchain()
    assert [m.content for m in latest[-2:]] == ["question 5", history[-1].content.replace(
        "reply 4", "reply 5")]
    assert latest[-3] == history[-1]  # the same object back, id included


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_langgraph_agent_trims_before_each_model_call(tmp_path) -> None:
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langgraph.prebuilt import create_react_agent

    from contextwindow.integrations.langgraph import invoke, trimming_hook

    inputs: list[list[Any]] = []

    class ToolModel(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
            inputs.append(list(messages))
            return super()._generate(messages, *args, **kwargs)

    @tool
    def lookup(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city} " + "and warm " * 40

    replies = []
    for k in range(3):
        replies += [AIMessage("", tool_calls=[{"name": "lookup", "args": {"city": f"c{k}"},
                                                "id": f"call_{k}"}]),
                    AIMessage(f"it is sunny in c{k}")]
    agent = create_react_agent(ToolModel(messages=iter(replies)), [lookup],
                               pre_model_hook=trimming_hook(260, COUNTER))
    store = SQLiteStore(tmp_path / "agent.db")
    for k in range(3):
        memory = TokenBufferMemory(260, counter=COUNTER, store=store, session="carol")
        state = invoke(agent, memory, HumanMessage(f"weather in c{k}?", id=f"user_{k}"))
        assert state["messages"][-1].content == f"it is sunny in c{k}"

    assert all(COUNTER.count_messages(sent) <= 260 for sent in inputs)
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
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=20), memory=memory)
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
    resumed = TokenBufferMemory(200, counter=COUNTER, store=SQLiteStore(tmp_path / "chat.db"),
                                session="dave")
    assert resumed.to_llamaindex() == view
    memory.reset()
    assert memory.get_all() == []


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
    assert again.to_langchain()[1] == AIMessage("a square", id="m2",
                                                response_metadata={"model_name": "x"})
