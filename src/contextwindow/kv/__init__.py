"""KV caches that keep generation inside a fixed memory budget: attention sinks + window
(StreamingLLM), and attention-scored eviction (H2O, TOVA, SnapKV)."""

from .scored import (
    EVICTION_POLICIES,
    POLICIES,
    POSITIONS,
    H2OPolicy,
    ScoredCache,
    ScoredLayer,
    SnapKVPolicy,
    TOVAPolicy,
    keep_indices,
    make_cache,
)
from .sink import Eviction, RopeShift, SinkCache, SinkLayer, SinkPolicy, cache_nbytes

__all__ = [
    "EVICTION_POLICIES",
    "POLICIES",
    "POSITIONS",
    "Eviction",
    "H2OPolicy",
    "RopeShift",
    "ScoredCache",
    "ScoredLayer",
    "SinkCache",
    "SinkLayer",
    "SinkPolicy",
    "SnapKVPolicy",
    "TOVAPolicy",
    "cache_nbytes",
    "keep_indices",
    "make_cache",
]
