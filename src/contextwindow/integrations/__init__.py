"""Adapters for the frameworks applications already use: each takes and gives back the
framework's own objects, backed by our memories and stores.

* :mod:`.langchain`: ``to_langchain`` and :class:`~.langchain.ContextWindowChatHistory`, a
  ``BaseChatMessageHistory`` for ``RunnableWithMessageHistory``.
* :mod:`.langgraph`: a pre-model hook that trims an agent's messages before each model call, and
  ``invoke`` to run an agent on a memory.
* :mod:`.llamaindex`: ``ChatMessage`` in and out, and :class:`~.llamaindex.ContextWindowMemory`
  for chat engines and agents.

OpenAI SDK objects need no adapter: memories, ``trim`` and the counters read
``resp.choices[0].message`` directly. Each module imports its framework when imported.
"""
