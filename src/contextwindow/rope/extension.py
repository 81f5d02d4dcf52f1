"""Context extension that changes attention instead of frequencies: the registry.

The frequency methods (:mod:`.registry`) rescale RoPE, so distances past the trained length
``L`` get angles squeezed between trained ones. The methods registered here keep RoPE exactly
as trained and remap *positions inside attention* so that every query-key distance the model
sees is one it met in training: Self-Extend (Jin et al., 2024) and Dual Chunk Attention (An et
al., 2024), in :mod:`.extension_methods`.

A method is a :class:`PositionMap`. Each causal pair ``(i, j)`` (query position ``i`` >= key
position ``j``) belongs to one *view*, chosen by ``d = i // unit - j // unit`` against the map's
thresholds (fixed, or a function of the query's unit); in view ``v`` the query is rotated to
``query[v](i)`` and the key to ``key[v](j)`` (``None``: its true position), and all views share
one softmax. Because ``d`` never increases with ``j``, the keys of one view form an interval
for every query: this is what lets the attention function (:mod:`.extended_attention`) work
block by block without an ``n x n`` map.

:func:`plan_extension` turns a method name, a factor and parameters into an
:class:`ExtensionPlan` (validated, with the parameters the authors' rules pick for the target
length when not given); applying it is :func:`~contextwindow.rope.scale_rope`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .registry import RESTORE_METHODS, check_factor

PositionFn = Callable[[Any], Any]
"""Absolute positions (an int64 tensor) -> the positions RoPE rotates them to in one view."""
Threshold = int | Callable[[Any], Any]
"""A view boundary in units of distance: fixed, or a function of the query's unit index (an int
or an int64 tensor) that keeps ``u - threshold(u)`` nondecreasing, so each view's keys still
form an interval whose ends never decrease with the query."""


@dataclass(frozen=True)
class PositionMap:
    """Which view each causal ``(query i, key j)`` pair uses, and the positions of each view.

    ``view(i, j)`` is the number of ``thresholds`` (increasing, > 0; see :data:`Threshold`)
    that ``i // unit - j // unit`` reaches; ``query[v]`` / ``key[v]`` give the positions of
    view ``v`` (``None``: unchanged).
    """

    unit: int
    thresholds: tuple[Threshold, ...]
    query: tuple[PositionFn | None, ...]
    key: tuple[PositionFn | None, ...]

    def __post_init__(self) -> None:
        if len(self.query) != self.views or len(self.key) != self.views:
            raise ConfigError("a position map needs one query and one key rule per view")
        fixed = [t for t in self.thresholds if isinstance(t, int)]
        if fixed != sorted(set(fixed)) or (fixed and fixed[0] < 1):
            raise ConfigError(f"thresholds must increase from >= 1, got {self.thresholds}")

    @property
    def views(self) -> int:
        return len(self.thresholds) + 1

    def _bounds(self, u: Any) -> tuple[Any, ...]:
        """``(0, *thresholds)`` for query unit(s) ``u``."""
        return (0, *(t if isinstance(t, int) else t(u) for t in self.thresholds))

    def view(self, i: Any, j: Any) -> Any:
        """The view of each pair (int64 tensors that broadcast)."""
        u = i // self.unit
        d = u - j // self.unit
        return sum((d >= t).long() for t in self._bounds(u)[1:])

    def span(self, view: int, i: int) -> tuple[int, int]:
        """The key positions ``[lo, hi]`` (inclusive, may be empty or start below 0) that query
        position ``i`` sees in ``view``: an interval, and both ends never decrease with ``i``."""
        u = i // self.unit
        bounds = self._bounds(u)
        hi = min(i, (u - bounds[view] + 1) * self.unit - 1)
        lo = (u - bounds[view + 1] + 1) * self.unit if view + 1 < len(bounds) else -1 << 62
        return lo, hi

    def positions(self, view: int, side: str, p: Any) -> Any:
        """Where ``side`` ("query" or "key") positions ``p`` sit in ``view``."""
        rule = (self.query if side == "query" else self.key)[view]
        return p if rule is None else rule(p)

    def relative(self, i: Any, j: Any) -> Any:
        """The distance RoPE sees for each pair (for the figures): query minus key position in
        the pair's view. Causal pairs only (``j <= i``)."""
        import torch

        view = self.view(i, j)
        i, j = torch.broadcast_tensors(i, j)
        out = i - j
        for v in range(self.views):
            here = view == v
            out = torch.where(here, self.positions(v, "query", i) - self.positions(v, "key", j),
                              out)
        return out


Builder = Callable[[int, Mapping[str, int]], PositionMap]
Chooser = Callable[[int, int, Mapping[str, int]], dict[str, int]]
Reach = Callable[[int, Mapping[str, int]], int | None]


@dataclass(frozen=True)
class ExtensionMethod:
    """A registered attention-side method.

    ``build(trained, params)`` validates the parameters and returns the map; ``choose(trained,
    target, given)`` completes ``given`` by the authors' rules for a ``target``-token context;
    ``reach(trained, params)`` is the longest sequence the parameters support (``None``: no
    limit); ``unsupported`` says why no other engine can run the result.
    """

    name: str
    build: Builder
    params: tuple[str, ...]
    choose: Chooser
    reach: Reach
    default_factor: float
    unsupported: str


_EXTENSIONS: dict[str, ExtensionMethod] = {}


def register_extension(
    name: str, *, params: tuple[str, ...], choose: Chooser, reach: Reach, unsupported: str,
    default_factor: float = 4.0,
) -> Callable[[Builder], Builder]:
    """Decorator adding an attention-side method under ``name``."""
    if name in RESTORE_METHODS:
        raise ConfigError(f"{name!r} is reserved: it restores the unscaled model")

    def decorator(build: Builder) -> Builder:
        _EXTENSIONS[name] = ExtensionMethod(name, build, tuple(params), choose, reach,
                                            default_factor, unsupported)
        return build

    return decorator


def available_extensions() -> tuple[str, ...]:
    """Names of the registered attention-side methods."""
    return tuple(_EXTENSIONS)


def get_extension(name: str) -> ExtensionMethod | None:
    """The attention-side method ``name``, or ``None`` when it is not one."""
    return _EXTENSIONS.get(name) if isinstance(name, str) else None


def positive_int(method: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, or ``ConfigError`` naming the parameter."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{method} {name} must be an integer {bound}, got {value!r}")
    return value


@dataclass(frozen=True)
class ExtensionPlan:
    """A validated attention-side extension: its parameters, the map, and the window
    (``length`` tokens, ``factor`` times the trained ``trained``) a model configured with it
    advertises."""

    method: str
    params: Mapping[str, int]
    factor: float
    trained: int
    length: int
    map: PositionMap

    def rope_parameters(self, base: float) -> dict[str, Any]:
        """The description :func:`~contextwindow.rope.scale_rope` returns. Not a transformers
        config: no engine but this library's attention function understands it."""
        return {"rope_type": self.method, "factor": self.factor,
                "original_max_position_embeddings": self.trained, "rope_theta": base,
                **self.params}


def plan_extension(method: str, trained: int, factor: float | None,
                   params: Mapping[str, Any]) -> ExtensionPlan:
    """Validate ``method`` with ``params`` for a model trained on ``trained`` tokens.

    Missing parameters are chosen by the method's rule for ``factor * trained`` tokens (the
    method's default factor when neither is given). With explicit parameters and no factor the
    window is the longest the parameters reach. ``ConfigError`` on unknown or invalid
    parameters, and when the parameters cannot reach the requested length.
    """
    spec = _EXTENSIONS[method]
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for {method!r}; "
                          f"accepted: {', '.join(spec.params)}")
    given = {k: v for k, v in params.items() if v is not None}
    if factor is None and set(given) != set(spec.params):
        factor = spec.default_factor
    target = None if factor is None else math.ceil(check_factor(method, factor) * trained)
    chosen = dict(given) if target is None else spec.choose(trained, target, given)
    pmap = spec.build(trained, chosen)
    reach = spec.reach(trained, chosen)
    if target is not None and reach is not None and reach < target:
        raise ConfigError(f"{method} with {_describe(chosen)} reaches {reach} tokens, fewer "
                          f"than factor {factor:g} x {trained} = {target}")
    length = target if target is not None else reach
    if length is None:  # no limit and no factor: the default factor's window
        length = math.ceil(spec.default_factor * trained)
    factor = length / trained if factor is None else float(factor)
    return ExtensionPlan(method, chosen, factor, trained, length, pmap)


def _describe(params: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())
