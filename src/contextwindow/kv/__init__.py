"""KV caches that keep generation inside a fixed memory budget (attention sinks + window)."""

from .sink import Eviction, RopeShift, SinkCache, SinkLayer, SinkPolicy, cache_nbytes

__all__ = ["Eviction", "RopeShift", "SinkCache", "SinkLayer", "SinkPolicy", "cache_nbytes"]
