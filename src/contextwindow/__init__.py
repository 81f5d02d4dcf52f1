"""contextwindow: keep LLM conversations and generations inside their token limits.

The text side is importable without torch::

    from contextwindow import TokenCounter, TokenBufferMemory, SQLiteStore, trim
    from contextwindow import SummaryBufferMemory, KeyFactsSummarizer

The summarizers are importable here too; torch and openai are imported only when a model
summarizer is first used.

The model side lives in ``contextwindow.kv``, ``contextwindow.rope``, ``contextwindow.models``
and ``contextwindow.evaluate`` (install the ``model`` extra).
"""

from importlib.metadata import version as _version

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
from .memory import (
    BufferMemory,
    Memory,
    MemoryStatus,
    SinkWindowMemory,
    SummaryBufferMemory,
    SummaryMemory,
    TokenBufferMemory,
    WindowMemory,
)
from .messages import Message, Summary, ToolCall
from .stores import InMemoryStore, SQLiteStore, Store
from .summarize import (
    CombinedSummarizer,
    FunctionSummarizer,
    KeyFactsSummarizer,
    OpenAISummarizer,
    Summarizer,
    SummarizerWarning,
    TransformersSummarizer,
)
from .tokens import TokenCounter
from .trim import CachePolicy, trim

__version__ = _version("contextwindow")  # one home: pyproject.toml

__all__ = [
    "BudgetExceededError", "BufferMemory", "CachePolicy", "CombinedSummarizer", "ConfigError",
    "ContextWindowError", "FunctionSummarizer", "InMemoryStore", "InvalidMessageError",
    "KeyFactsSummarizer", "Memory", "MemoryStatus", "Message", "ModelError", "OpenAISummarizer",
    "ResourceError", "SQLiteStore", "SinkWindowMemory", "Store", "StoreError", "Summarizer",
    "SummarizerError", "SummarizerWarning", "Summary", "SummaryBufferMemory", "SummaryMemory",
    "TokenBufferMemory", "TokenCounter", "ToolCall", "TransformersSummarizer", "UnknownModelError",
    "WindowMemory", "trim",
]
