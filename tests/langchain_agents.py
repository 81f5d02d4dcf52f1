"""A scripted LangChain chat model for the agent-loop tests: it calls a weather tool once per
turn, answers, and records every message list it is given (what the agent sent the model)."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool


@tool
def lookup(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city} " + "and warm " * 40


def replies(turns: int) -> list[AIMessage]:
    """Per turn ``k``: a call of ``lookup`` for city ``c{k}``, then the answer."""
    out: list[AIMessage] = []
    for k in range(turns):
        out += [AIMessage("", tool_calls=[{"name": "lookup", "args": {"city": f"c{k}"},
                                           "id": f"call_{k}"}]),
                AIMessage(f"it is sunny in c{k}")]
    return out


def recording_model(turns: int) -> tuple[Any, list[list[Any]]]:
    """A model scripted with :func:`replies` and the list its inputs are appended to."""
    inputs: list[list[Any]] = []

    class ToolModel(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
            inputs.append(list(messages))
            return super()._generate(messages, *args, **kwargs)

    return ToolModel(messages=iter(replies(turns))), inputs
