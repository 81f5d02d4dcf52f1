"""Attention-scored KV eviction under a token budget: H2O, TOVA and SnapKV.

Sinks + window (:mod:`.sink`) keeps a fixed shape of the stream and forgets the middle. These
policies keep the tokens attention says matter, so a fact in the middle can survive:

* **H2O** (Zhang et al., 2023): per KV head, every token's attention *accumulated* over all the
  queries that saw it; keep the ``recent`` newest tokens and the heaviest hitters of the rest.
* **TOVA** (Oren et al., 2024): per layer, the attention of the *current* query only, averaged
  over all heads; keep the ``budget`` best-scored tokens (the same tokens in every head).
* **SnapKV** (Li et al., 2024): per KV head, the attention of the last ``window`` queries (the
  observation window), max-pooled over neighbouring tokens so phrases stay whole; keep the
  observation window and the best-scored tokens before it. SnapKV compresses a prompt once; in
  a stream it compresses every forward that overflows the budget, and a one-token decode step
  observes through that one query.

Every policy can also pin ``sinks`` first tokens (StreamingLLM's attention sinks; ``sinks=0`` is
the paper's version). A policy is a frozen dataclass with one method, ``priority(weights,
previous)``; :func:`keep_indices` is the one selection rule: sinks, then the ``recent`` newest,
then the highest priority of the rest.

**Positions** (``positions=``, :data:`POSITIONS`). ``"slots"`` (default) numbers kept tokens by
*cache slot*, as the sink cache does: after an eviction a head's kept tokens keep their order,
move to slots ``0..budget-1`` and each key is re-rotated by ``new slot - old slot``
(:meth:`.RopeShift.move`). A heavy hitter kept from far back then sits right before the next
kept token: its distance to a query is its *rank* among the kept tokens, so every position stays
below ``budget + chunk`` (inside the trained length) however long the stream, at the price of
the true distances. ``"stream"`` keeps each token at its index in the stream, as kvpress and the
papers do: distances are the true ones, gaps and all, so the stream must stay inside the
trained length (a prompt to compress, not an endless stream). Measured on a passkey prompt
(docs/eviction.md), the true distances are what lets TOVA find the key. H2O and SnapKV choose
per KV head, so different heads hold different tokens at the same slot; values carry no position.

**Attention weights** come from :mod:`.attention` (SDPA output, plus one fp32 matmul for the
query rows a policy needs); building a :class:`ScoredCache` switches the model to it. Eviction
happens inside each layer's attention call, after the forward attended to everything cached plus
the chunk, so between forwards every layer holds at most ``budget`` tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicCache

from ..errors import ConfigError, ModelError
from .attention import hand_over, use_scored_attention
from .sink import RopeShift, SinkCache, SinkLayer, SinkPolicy, cache_nbytes, layer_shifts

__all__ = [
    "EVICTION_POLICIES",
    "POLICIES",
    "H2OPolicy",
    "ScoredCache",
    "ScoredLayer",
    "SnapKVPolicy",
    "TOVAPolicy",
    "keep_indices",
    "make_cache",
]


def _check(budget: int, sinks: int, recent: int) -> None:
    for name, value in (("budget", budget), ("sinks", sinks), ("recent", recent)):
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
    if budget <= sinks + recent:
        raise ConfigError(
            f"budget ({budget}) must exceed sinks + recent tokens ({sinks} + {recent}): "
            "otherwise nothing is left to choose by score"
        )


def keep_indices(priority: torch.Tensor, budget: int, sinks: int, recent: int) -> torch.Tensor:
    """Which of ``priority.shape[-1]`` cached tokens each head keeps: ``[heads, budget]``, sorted.

    The first ``sinks`` and the last ``recent`` tokens always; of the rest, the ``budget - sinks
    - recent`` with the highest ``priority`` (``[heads, tokens]``).
    """
    pinned = priority.clone()
    pinned[:, :sinks] = float("inf")
    pinned[:, pinned.shape[-1] - recent :] = float("inf")
    # Drop the lowest rather than rank the kept: a decode step drops one token of ``budget + 1``.
    drop = pinned.topk(pinned.shape[-1] - budget, dim=-1, largest=False).indices
    kept = torch.ones_like(pinned, dtype=torch.bool).scatter_(-1, drop, False)
    return kept.nonzero()[:, 1].view(-1, budget)


@dataclass(frozen=True)
class H2OPolicy:
    """Heavy hitters (accumulated attention per KV head) plus the ``recent`` newest tokens.

    ``recent=None`` splits the budget evenly between recent tokens and heavy hitters, as the
    paper does.
    """

    budget: int = 1024
    sinks: int = 4
    recent: int | None = None
    name: ClassVar[str] = "h2o"

    def __post_init__(self) -> None:
        _check(self.budget, self.sinks, self.protected)

    @property
    def protected(self) -> int:
        """Newest tokens always kept."""
        return (self.budget - self.sinks) // 2 if self.recent is None else self.recent

    def rows(self, queries: int) -> int:
        """Every query of a forward adds to the accumulated scores."""
        return queries

    def priority(self, weights: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """Accumulated attention: ``previous`` plus this forward's, summed over query heads."""
        now = weights.sum(dim=(1, 2))
        if previous is None:
            return now
        return now + F.pad(previous, (0, now.shape[-1] - previous.shape[-1]))


@dataclass(frozen=True)
class TOVAPolicy:
    """The current (last) query's attention, averaged over all heads; no recent window."""

    budget: int = 1024
    sinks: int = 4
    name: ClassVar[str] = "tova"
    protected: ClassVar[int] = 0

    def __post_init__(self) -> None:
        _check(self.budget, self.sinks, self.protected)

    def rows(self, queries: int) -> int:
        """Only the newest query votes."""
        return 1

    def priority(self, weights: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """The last query's weights, mean over all heads, the same for every KV head."""
        return weights[:, :, -1].mean(dim=(0, 1)).expand(weights.shape[0], -1)


@dataclass(frozen=True)
class SnapKVPolicy:
    """The observation window's attention (last ``window`` queries), max-pooled over ``kernel``
    neighbouring tokens per KV head; the observation window itself is always kept."""

    budget: int = 1024
    sinks: int = 4
    window: int = 32
    kernel: int = 7
    name: ClassVar[str] = "snapkv"

    def __post_init__(self) -> None:
        _check(self.budget, self.sinks, self.window)
        if not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"kernel must be an odd integer >= 1, got {self.kernel!r}")

    @property
    def protected(self) -> int:
        return self.window

    def rows(self, queries: int) -> int:
        """The observation window (or the whole forward, when it is shorter)."""
        return min(queries, self.window)

    def priority(self, weights: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """Window attention summed over queries and query heads, pooled over the tokens before
        the window (the window's own scores are not pooled into its neighbours)."""
        votes = weights.sum(dim=(1, 2))
        before = votes.shape[-1] - self.window
        if before <= 0:
            return votes
        pooled = F.max_pool1d(
            votes[None, :, :before], self.kernel, stride=1, padding=self.kernel // 2
        )[0]
        return torch.cat((pooled, votes[:, before:]), dim=-1)


ScoredPolicy = H2OPolicy | TOVAPolicy | SnapKVPolicy

POSITIONS = ("slots", "stream")
"""How a scored cache numbers the tokens it keeps (see *Positions* in the module docstring)."""


def _check_positions(positions: str) -> None:
    if positions not in POSITIONS:
        raise ConfigError(f"positions must be one of {', '.join(POSITIONS)}, not {positions!r}")


class ScoredLayer(SinkLayer):
    """One layer of a :class:`ScoredCache`: stores like a sink layer, evicts when scored.

    ``update`` (from :class:`SinkLayer`: frames, offsets for ``generate()``) keeps everything and
    hands the layer to the attention function; ``observe`` then receives the weights, updates the
    priority and, over budget, keeps :func:`keep_indices` and closes the gaps in the positions.
    """

    def __init__(self, policy: ScoredPolicy, shift: RopeShift, positions: str = "slots") -> None:
        # SinkLayer uses its policy only to evict and to size, both overridden here; `scoring`
        # is the same policy under the type this layer reads.
        super().__init__(policy, shift)  # type: ignore[arg-type]
        self.scoring: ScoredPolicy = policy
        self.positions = positions
        self.priority: torch.Tensor | None = None
        self.origin: torch.Tensor | None = None
        """Stream index of every held token, ``[kv_heads, tokens]`` (which tokens survived)."""
        self.waiting = False

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.waiting:
            raise ModelError(
                "the attention weights of the last forward never reached the scored cache: the "
                "model must run the attention ScoredCache(model, ...) switched it to"
            )
        fed = torch.arange(self.seen, self.seen + key_states.shape[-2], device=key_states.device)
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        fed = fed.expand(key_states.shape[1], -1)
        self.origin = fed if self.origin is None else torch.cat((self.origin, fed), dim=-1)
        self.waiting = True
        hand_over(self)
        return keys, values

    def _stored_at(self, length: int) -> int:
        """Slot numbering closes the gaps; stream numbering keeps each token's stream index."""
        return self.seen if self.positions == "stream" else length

    def _evict(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return keys, values  # eviction waits for the scores (observe)

    def rows(self, queries: int) -> int:
        return self.scoring.rows(queries)

    def observe(self, weights: torch.Tensor) -> None:
        """Score the cached tokens with ``weights`` (``[kv_heads, group, rows, tokens]``) and evict.

        Weights for a layer that is not waiting for them (a stale hand-over) are ignored.
        """
        if not self.waiting:
            return
        self.waiting = False
        assert self.keys is not None and self.values is not None and self.origin is not None, (
            "update() stores the tokens before it hands the layer over")
        policy = self.scoring
        self.priority = policy.priority(weights, self.priority)
        if self.keys.shape[-2] <= policy.budget:
            return
        index = keep_indices(self.priority, policy.budget, policy.sinks, policy.protected)
        rows = index[None, :, :, None]
        keys = self.keys.gather(2, rows.expand(-1, -1, -1, self.keys.shape[-1]))
        self.values = self.values.gather(2, rows.expand(-1, -1, -1, self.values.shape[-1]))
        if self.positions == "slots":
            slots = torch.arange(policy.budget, device=index.device)
            keys = self.shift.move(keys, (slots - index)[None])
        self.keys = keys
        self.priority = self.priority.gather(1, index)
        self.origin = self.origin.gather(1, index)

    def get_max_length(self) -> int:
        return self.scoring.budget

    def reset(self) -> None:
        super().reset()
        self.priority = self.origin = None
        self.waiting = False


class ScoredCache(Cache):
    """A transformers ``Cache`` holding at most ``policy.budget`` tokens per layer between forwards,
    chosen by attention scores (see the module docstring).

    Example::

        cache = ScoredCache(model, TOVAPolicy(budget=1024))  # an endless stream: slot positions
        model.generate(input_ids, cache=cache, max_new_tokens=500)
        ScoredCache(model, TOVAPolicy(budget=1024), positions="stream")  # compress a prompt

    Building it switches ``model`` to :func:`.attention.scored_attention` (SDPA plus scores, so
    other caches are unaffected). Limits as :class:`SinkCache`: batch size 1, no padding, a fresh
    cache per ``generate()``, rotate-half RoPE decoders only.
    """

    def __init__(self, model: Any, policy: ScoredPolicy, *, positions: str = "slots") -> None:
        _check_positions(positions)
        shifts = layer_shifts(model)  # ModelError before the model is touched
        use_scored_attention(model)
        self.policy = policy
        self.positions = positions
        super().__init__(layers=[ScoredLayer(policy, shift, positions) for shift in shifts])

    @property
    def seen_tokens(self) -> int:
        """Tokens streamed through the cache so far."""
        first = self.layers[0] if self.layers else None
        return first.seen if isinstance(first, ScoredLayer) else 0

    def nbytes(self) -> int:
        """Bytes held by the cached keys and values, all layers."""
        return cache_nbytes(self)


def _sink_policy(budget: int, sinks: int) -> SinkPolicy:
    """Sinks + window at a token budget (the window is what the sinks leave)."""
    _check(budget, sinks, 0)
    return SinkPolicy(sinks=sinks, window=budget - sinks)


EVICTION_POLICIES: dict[str, Callable[[int, int], Any]] = {
    "sinks": _sink_policy,
    "h2o": lambda budget, sinks: H2OPolicy(budget=budget, sinks=sinks),
    "tova": lambda budget, sinks: TOVAPolicy(budget=budget, sinks=sinks),
    "snapkv": lambda budget, sinks: SnapKVPolicy(
        budget=budget, sinks=sinks, window=min(32, (budget - sinks) // 2)
    ),
}
"""Each eviction policy by name, built from a token budget and a number of sinks."""
POLICIES = EVICTION_POLICIES  # the name before the glossary (DEVELOPERS.md); kept


def make_cache(model: Any, policy: str, budget: int | None = None, *, sinks: int = 4,
               positions: str = "slots") -> Cache:
    """A fresh cache for ``policy`` (a :data:`POLICIES` name, or ``"full"``) at ``budget`` tokens.

    ``"full"`` is a ``DynamicCache`` (no eviction, the ceiling); ``"sinks"`` a
    :class:`SinkCache` of ``sinks`` + ``budget - sinks``. ``positions`` (:data:`POSITIONS`) is
    for the scored policies; a sweep may pass it for every policy: the full cache numbers by
    stream and the sink cache by slot whatever it says.
    """
    _check_positions(positions)
    if policy == "full":
        return DynamicCache(config=model.config)
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; choose from full, {', '.join(POLICIES)}")
    if budget is None:
        raise ConfigError(f"policy {policy!r} needs a token budget")
    built = POLICIES[policy](budget, sinks)
    if isinstance(built, SinkPolicy):
        return SinkCache(model, sinks=built.sinks, window=built.window)
    return ScoredCache(model, built, positions=positions)
