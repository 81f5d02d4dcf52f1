"""KV caches that keep generation inside a fixed memory budget: attention sinks + window
(StreamingLLM), and attention-scored eviction (H2O, TOVA, SnapKV)."""

from .scored import (
    EVICTION_POLICIES,
    POSITIONS,
    H2OPolicy,
    ScoredCache,
    SnapKVPolicy,
    TOVAPolicy,
    keep_indices,
    make_cache,
)
from .sink import Eviction, RopeShift, SinkCache, SinkPolicy, cache_nbytes

__all__ = [
    "EVICTION_POLICIES",
    "POSITIONS",
    "Eviction",
    "H2OPolicy",
    "RopeShift",
    "ScoredCache",
    "SinkCache",
    "SinkPolicy",
    "SnapKVPolicy",
    "TOVAPolicy",
    "cache_nbytes",
    "keep_indices",
    "make_cache",
]

# Kept importable from here (earlier releases listed them); not the API. ``POLICIES`` is
# ``EVICTION_POLICIES`` under its name before the glossary (DEVELOPERS.md).
from .scored import POLICIES, ScoredLayer  # noqa: F401
from .sink import SinkLayer  # noqa: F401
