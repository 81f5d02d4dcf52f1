"""contextwindow: keep LLM conversations and generations inside their token limits.

The text side is importable without torch::

    from contextwindow import TokenCounter, TokenBufferMemory, SQLiteStore, trim

The model side lives in ``contextwindow.kv``, ``contextwindow.rope``, ``contextwindow.models``
and ``contextwindow.evaluate`` (install the ``model`` extra).
"""

from .errors import (
    BudgetExceededError,
    ConfigError,
    ContextWindowError,
    InvalidMessageError,
    ModelError,
    ResourceError,
    StoreError,
    SummarizerError,
    UnknownModelError,
)
from .memory import BufferMemory, Memory, SinkWindowMemory, TokenBufferMemory, WindowMemory
from .messages import Message, Summary, ToolCall
from .stores import InMemoryStore, SQLiteStore, Store
from .tokens import TokenCounter
from .trim import trim

__version__ = "0.1.0"

__all__ = [
    "BudgetExceededError", "BufferMemory", "ConfigError", "ContextWindowError", "InMemoryStore",
    "InvalidMessageError", "Memory", "Message", "ModelError", "ResourceError", "SQLiteStore",
    "SinkWindowMemory", "Store", "StoreError", "Summary", "SummarizerError", "TokenBufferMemory",
    "TokenCounter", "ToolCall", "UnknownModelError", "WindowMemory", "trim",
]
