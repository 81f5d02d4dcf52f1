"""How a reply may be decoded, checked on the text side: :class:`SamplingParams`.

A request's sampling fields (``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``) are
checked here, once, by whoever receives them: the HTTP server (local engine or gateway, which
maps the :class:`~contextwindow.errors.ConfigError` to a 400 naming the field) and the local
engine's sampler (:mod:`contextwindow.generation.sampling`, which decodes with them). Nothing
here needs a model, so a gateway validates requests without the model side.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["MAX_STOP_STRINGS", "SamplingParams"]

MAX_STOP_STRINGS = 4


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(value: Any, low: float, high: float) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and low <= value <= high)


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one reply. ``temperature=0`` is greedy; ``seed`` makes sampling repeatable."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be an integer >= 1, not {self.max_tokens!r}")
        if not _in_range(self.temperature, 0, 2):
            raise ConfigError(f"temperature must be a number in [0, 2], not {self.temperature!r}")
        if not _in_range(self.top_p, 0, 1):
            raise ConfigError(f"top_p must be a number in [0, 1], not {self.top_p!r}")
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        stop = tuple(stop) if isinstance(stop, Iterable) else None
        if stop is None or len(stop) > MAX_STOP_STRINGS \
                or not all(isinstance(s, str) and s for s in stop):
            raise ConfigError(
                f"stop must be up to {MAX_STOP_STRINGS} non-empty strings, not {self.stop!r}")
        object.__setattr__(self, "stop", stop)
        if self.seed is not None and not _is_int(self.seed):
            raise ConfigError(f"seed must be an integer, not {self.seed!r}")
