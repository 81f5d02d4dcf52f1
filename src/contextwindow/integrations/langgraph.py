"""LangGraph: our trimming before each model call of an agent, and agents that run on a memory.

:func:`trimming_hook` is a ``pre_model_hook`` for ``langgraph.prebuilt.create_react_agent``: it
fits the agent's messages into a token budget by our rules (system prompt and tool pairing kept,
never over budget) and hands them to the model as ``llm_input_messages``, leaving the graph's
state whole. :func:`invoke` (and :func:`ainvoke`, async) runs an agent on one of our
memories: the memory's budgeted view in, the agent's new messages (tool calls and results
included) appended to the memory and its store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import MissingExtraError

try:
    from langchain_core.utils.function_calling import convert_to_openai_tool
except ImportError as exc:  # the framework is an extra: say which
    raise MissingExtraError(__name__, "langchain", exc) from None

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
    memory.add_message(_as_input(message))
    view = to_langchain_messages(memory.messages())
    state = agent.invoke({"messages": view}, **options)
    for produced in state["messages"][len(view):]:
        memory.add_message(produced)
    return state


async def ainvoke(agent: Any, memory: Memory, message: Any, **options: Any) -> dict[str, Any]:
    """:func:`invoke` on the event loop: ``agent.ainvoke``, and the memory's async methods
    (its store's own async client where it has one, see :mod:`contextwindow.stores.aio`)."""
    await memory.aadd_message(_as_input(message))
    view = to_langchain_messages(await memory.amessages())
    state = await agent.ainvoke({"messages": view}, **options)
    for produced in state["messages"][len(view):]:
        await memory.aadd_message(produced)
    return state


def _as_input(message: Any) -> Any:
    """A string is a user message; anything else is a message as the memory takes it."""
    return {"role": "user", "content": message} if isinstance(message, str) else message
