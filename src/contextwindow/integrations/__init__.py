"""The frameworks applications already use, on our memories and stores: each module takes and
gives back the framework's own objects.

* :mod:`.middleware`: :class:`~.middleware.ContextWindowMiddleware`, an ``AgentMiddleware``
  for LangChain 1.x ``create_agent``: each model call fitted (trimmed, or a memory's view).
* :mod:`.langchain`: :class:`~.langchain.ContextWindowChatHistory`, a
  ``BaseChatMessageHistory`` for ``RunnableWithMessageHistory``.
* :mod:`.langgraph`: a pre-model hook that trims an agent's messages before each model call, and
  ``invoke`` / ``ainvoke`` to run an agent on a memory.
* :mod:`.llamaindex`: :class:`~.llamaindex.ContextWindowMemory` for chat engines and agents.

Converting messages needs none of them: :mod:`contextwindow.adapters` reads and writes LangChain,
LlamaIndex and OpenAI SDK messages without importing a framework, and memories, ``trim`` and the
counters take those objects directly. These modules are leaves: each imports its framework and
the core, and nothing in the core imports them.
"""

# Nothing at the package root: each integration is imported from its module, which imports its
# framework (importing this package imports none of them).
__all__: list[str] = []
