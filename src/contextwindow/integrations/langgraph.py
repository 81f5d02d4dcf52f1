"""LangGraph: our trimming before each model call of an agent, and agents that run on a memory.

:func:`trimming_hook` is a ``pre_model_hook`` for ``langgraph.prebuilt.create_react_agent``: it
fits the agent's messages into a token budget by our rules (system prompt and tool pairing kept,
never over budget) and hands them to the model as ``llm_input_messages``, leaving the graph's
state whole. :func:`invoke` runs an agent on one of our memories: the memory's budgeted view in,
the agent's new messages (tool calls and results included) appended to the memory and its store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.utils.function_calling import convert_to_openai_tool

from ..memory import Memory, default_counter
from ..tokens import TokenCounter
from ..trim import trim
from .langchain import to_langchain_messages


def trimming_hook(max_tokens: int, counter: TokenCounter | None = None, *, keep_first: int = 0,
                  tools: Sequence[Any] | None = None
                  ) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A ``pre_model_hook`` that trims ``state["messages"]`` to ``max_tokens`` prompt tokens
    (``counter`` defaults to gpt-4o's). Pass the agent's ``tools`` (LangChain tools or OpenAI
    schemas) to count their definitions too."""
    counter = counter or default_counter()
    tools = [tool if isinstance(tool, Mapping) else convert_to_openai_tool(tool)
             for tool in tools or ()]

    def hook(state: Mapping[str, Any]) -> dict[str, Any]:
        messages = state["messages"]
        return {"llm_input_messages": trim(messages, max_tokens, counter, keep_first=keep_first,
                                           tools=tools)}

    return hook


def invoke(agent: Any, memory: Memory, message: Any, **options: Any) -> dict[str, Any]:
    """Add ``message`` to ``memory``, run ``agent`` on the memory's view, and append every
    message the agent produced. Returns the agent's final state; ``options`` go to
    ``agent.invoke`` (a ``config``, for instance). A string ``message`` is a user message."""
    if isinstance(message, str):
        message = {"role": "user", "content": message}
    memory.add_message(message)
    view = to_langchain_messages(memory.messages())
    state = agent.invoke({"messages": view}, **options)
    for produced in state["messages"][len(view):]:
        memory.add_message(produced)
    return state
