"""Conversation memories: the whole history in a store, and a budgeted view of it.

* :mod:`.base` -- :class:`Memory` (history, running token totals, the store) and
  :class:`MemoryStatus`;
* :mod:`.budget` -- Buffer, Window, TokenBuffer and SinkWindow: which recent turns to keep;
* :mod:`.recall` -- RecallMemory: the newest turns plus older ones recalled from the store;
* :mod:`.summary` -- SummaryBuffer and Summary: older turns folded into a running summary
  (shared machinery in :mod:`._summarizing`, the fold and the summary cut in :mod:`._folding`).
"""

from ._summarizing import SummarizingMemory
from .base import Memory, MemoryStatus, default_counter
from .budget import (
    DEFAULT_KEEP_FIRST,
    BufferMemory,
    SinkWindowMemory,
    TokenBufferMemory,
    WindowMemory,
)
from .recall import RecallMemory
from .summary import SummaryBufferMemory, SummaryMemory

__all__ = [
    "DEFAULT_KEEP_FIRST",
    "BufferMemory",
    "Memory",
    "MemoryStatus",
    "RecallMemory",
    "SinkWindowMemory",
    "SummarizingMemory",
    "SummaryBufferMemory",
    "SummaryMemory",
    "TokenBufferMemory",
    "WindowMemory",
    "default_counter",
]

# Kept importable from here (earlier releases listed it); not the API.
from ._folding import Fold  # noqa: F401
