"""Local chat generation: fit a conversation to the window, then decode on the sink cache or in
llama.cpp.

* :mod:`.engine` -- :class:`Engine` (the fit every engine shares), :class:`Generator` (the
  transformers engine: fit + generate), :class:`FitResult`;
* :mod:`.llamacpp` -- :class:`LlamaCppGenerator` (the same fit, decoded by llama.cpp
  in-process; the ``llamacpp`` extra);
* :mod:`._run` -- :class:`Completion`, and one request's forward passes and decode loop;
* :mod:`.sampling` -- :class:`SamplingParams` (the one place sampling settings are checked) and
  :func:`sample`;
* :mod:`.decoding` -- :class:`IncrementalDecoder` and :class:`StopMatcher` (ids to streamed text);
* :mod:`.prefix` -- :class:`PrefixCache` (recent requests' KV caches, reused by token-id prefix).
"""

from .decoding import IncrementalDecoder
from .engine import Completion, Engine, FitResult, Generator
from .llamacpp import LlamaCppGenerator
from .prefix import PrefixCache
from .sampling import SamplingParams

__all__ = [
    "Completion",
    "Engine",
    "FitResult",
    "Generator",
    "IncrementalDecoder",
    "LlamaCppGenerator",
    "PrefixCache",
    "SamplingParams",
]

# Kept importable from here (earlier releases listed them); not the API. ``POLICIES`` and
# ``SINKS_KEEP_FIRST`` are the names before the glossary (DEVELOPERS.md).
from .decoding import StopMatcher  # noqa: F401
from .engine import POLICIES, SINKS_KEEP_FIRST  # noqa: F401
from .sampling import MAX_STOP_STRINGS, sample  # noqa: F401
