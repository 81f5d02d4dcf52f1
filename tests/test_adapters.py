"""contextwindow.adapters: other libraries' message shapes, read and written without importing
a framework; the old names in ``messages`` and on ``Memory`` still work, with a warning.

The round trips of every LangChain class and LlamaIndex block are in test_integrations.py.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from contextwindow import BufferMemory, ConfigError, InvalidMessageError, Message, adapters
from contextwindow import messages as messages_module


def test_importing_the_core_imports_no_framework() -> None:
    code = (
        "import sys\n"
        "import contextwindow, contextwindow.adapters, contextwindow.tokens, contextwindow.trim\n"
        "import contextwindow.memory\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('langchain', 'llama_index',\n"
        "    'contextwindow.integrations')))\n"
        "print('LOADED', loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


def test_llamaindex_reader_is_duck_typed() -> None:
    """Any object shaped like a ChatMessage is read: blocks by ``block_type``, no isinstance."""
    block = SimpleNamespace(block_type="text", text="hello")
    call = SimpleNamespace(block_type="tool_call", tool_call_id="c1", tool_name="f",
                           tool_kwargs={"x": 1})
    chat = SimpleNamespace(role=SimpleNamespace(value="assistant"), blocks=[block, call],
                           additional_kwargs={"note": "kept"})
    message = adapters.as_message(chat)
    assert message.to_openai() == {"role": "assistant", "content": "hello", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]}
    assert message.meta is not None and message.meta.value() == {"llamaindex": {
        "additional_kwargs": {"note": "kept"}, "tool_call_blocks": True}}

    audio = SimpleNamespace(role="user", blocks=[block, SimpleNamespace(block_type="audio")],
                            additional_kwargs={})
    with pytest.raises(InvalidMessageError, match=r"LlamaIndex block 1 \('audio'\) cannot be"):
        adapters.as_message(audio)


@pytest.mark.parametrize(("writer", "module", "extra"), [
    (adapters.to_langchain, "langchain_core.messages", "langchain"),
    (adapters.to_llamaindex, "llama_index.core.base.llms.types", "llamaindex"),
])
def test_a_writer_without_its_framework_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                        writer, module: str,
                                                        extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what an uninstalled package looks like
    with pytest.raises(ConfigError, match=rf"pip install 'contextwindow\[{extra}\]'"):
        writer(Message(role="user", content="hi"))


@pytest.mark.parametrize("name", ["as_message", "as_messages", "from_sdk_object",
                                  "from_langchain", "LANGCHAIN_TYPES"])
def test_moved_readers_are_deprecated_aliases_in_messages(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=rf"moved to contextwindow\.adapters\.{name}$"):
        alias = getattr(messages_module, name)
    assert alias is getattr(adapters, name)


def test_the_old_import_statement_still_works() -> None:
    with pytest.warns(DeprecationWarning, match="contextwindow.adapters.as_message"):
        from contextwindow.messages import as_message
    assert as_message({"role": "user", "content": "hi"}) == Message(role="user", content="hi")
    with pytest.raises(AttributeError, match="has no attribute 'not_a_reader'"):
        messages_module.not_a_reader  # noqa: B018


def test_memory_framework_methods_are_deprecated_wrappers() -> None:
    from langchain_core.messages import AIMessage, HumanMessage
    from llama_index.core.base.llms.types import ChatMessage

    memory = BufferMemory()
    memory.add_message(HumanMessage("hi", id="h"))
    memory.add_message({"role": "assistant", "content": "hello", "id": "a"})
    with pytest.warns(DeprecationWarning, match=r"to_langchain_messages\(memory\.messages\(\)\)"):
        langchain = memory.to_langchain()
    assert langchain == [HumanMessage("hi", id="h"), AIMessage("hello", id="a")]
    with pytest.warns(DeprecationWarning, match=r"to_llamaindex_messages\(memory\.messages\(\)"):
        llamaindex = memory.to_llamaindex()
    assert llamaindex == [ChatMessage(role="user", content="hi"),
                          ChatMessage(role="assistant", content="hello")]
