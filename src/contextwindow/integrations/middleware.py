"""LangChain 1.x agents: our fit before every model call, as an ``AgentMiddleware``.

``create_agent(model, tools, middleware=[ContextWindowMiddleware(4000)])`` keeps the agent's
state whole (the checkpointer stores every message) and hands the model a budgeted context:

* without a memory, the agent's messages trimmed by our rules (the system prompt and the
  ``keep_first`` messages pinned, a tool call never parted from its results, never over budget;
  the system prompt and the tool definitions are counted);
* with a ``memory`` (any :class:`~contextwindow.memory.Memory`: a
  :class:`~contextwindow.memory.RecallMemory` brings older turns back by relevance, a summary
  memory folds them), each message of the agent's state is added to the memory once (by id) and
  the model sees the memory's view (the agent's ``system_prompt`` comes on top: leave room
  for it in the memory's budget).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, MissingExtraError

try:
    from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
    from langchain_core.messages import AnyMessage, BaseMessage
    from langchain_core.utils.function_calling import convert_to_openai_tool
except ImportError as exc:  # the framework is an extra: say which
    raise MissingExtraError(__name__, "langchain", exc) from None

from ..adapters import as_message, to_langchain_messages
from ..memory import Memory, default_counter
from ..tokens import TokenCounter
from ..trim import trim

__all__ = ["ContextWindowMiddleware"]


class ContextWindowMiddleware(AgentMiddleware):
    """Fit the messages of every model call: to ``max_tokens`` by :func:`~contextwindow.trim.
    trim`, or through ``memory`` (its budget applies; ``max_tokens`` must then be left out)."""

    def __init__(self, max_tokens: int | None = None, counter: TokenCounter | None = None, *,
                 keep_first: int = 0, memory: Memory | None = None) -> None:
        super().__init__()
        if (max_tokens is None) == (memory is None):
            raise ConfigError("give ContextWindowMiddleware a max_tokens or a memory (whose "
                              "budget applies), not both")
        self.max_tokens, self.keep_first, self.memory = max_tokens, keep_first, memory
        self.counter = counter or (memory.counter if memory is not None else default_counter())
        self._known: set[str] | None = None  # ids of the messages the memory holds

    def fit(self, request: ModelRequest) -> ModelRequest:
        """The request with its messages fitted (the system message stays where it was)."""
        if self.memory is not None:
            return request.override(messages=self._through_memory(request.messages))
        system = [request.system_message] if request.system_message is not None else []
        tools = [tool if isinstance(tool, Mapping) else convert_to_openai_tool(tool)
                 for tool in request.tools or ()]
        assert self.max_tokens is not None  # checked in __init__
        kept = trim([*system, *request.messages], self.max_tokens, self.counter,
                    keep_first=self.keep_first, tools=tools)
        return request.override(messages=kept[len(system):])

    def _through_memory(self, messages: Sequence[BaseMessage]) -> list[AnyMessage]:
        memory = self.memory
        assert memory is not None
        if self._known is None:
            self._known = {message.id for message in memory.history()}
        for message in messages:
            converted = as_message(message)
            if converted.id not in self._known:
                memory.add_message(converted)
                self._known.add(converted.id)
        return to_langchain_messages(memory.messages())

    def wrap_model_call(self, request: ModelRequest,
                        handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        return handler(self.fit(request))

    async def awrap_model_call(self, request: ModelRequest,
                               handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
                               ) -> Any:
        return await handler(self.fit(request))

