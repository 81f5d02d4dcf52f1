"""Local chat generation: fit a conversation to the window, then decode on the sink cache.

* :mod:`.engine` -- :class:`Generator` (fit + generate), :class:`FitResult`;
* :mod:`.run` -- :class:`Completion`, and one request's forward passes and decode loop;
* :mod:`.sampling` -- :class:`SamplingParams` (the one place sampling settings are checked) and
  :func:`sample`;
* :mod:`.decoding` -- :class:`IncrementalDecoder` and :class:`StopMatcher` (ids to streamed text);
* :mod:`.prefix` -- :class:`PrefixCache` (recent requests' KV caches, reused by token-id prefix).
"""

from .decoding import IncrementalDecoder, StopMatcher
from .engine import POLICIES, SINKS_KEEP_FIRST, Completion, FitResult, Generator
from .prefix import PrefixCache
from .sampling import MAX_STOP_STRINGS, SamplingParams, sample

__all__ = [
    "MAX_STOP_STRINGS",
    "POLICIES",
    "SINKS_KEEP_FIRST",
    "Completion",
    "FitResult",
    "Generator",
    "IncrementalDecoder",
    "PrefixCache",
    "SamplingParams",
    "StopMatcher",
    "sample",
]
