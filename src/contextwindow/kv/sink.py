"""StreamingLLM's attention-sink KV cache for transformers 5.x models.

Why it works: a causal LM parks a lot of attention on the first few tokens of a sequence (the
"attention sinks"), whatever they say. Plain window attention evicts them as soon as the stream
is longer than the window, and quality collapses; dense attention keeps everything, so memory and
cost grow without bound and positions run past the trained length. Keeping the first ``sinks``
tokens plus the most recent ``window`` tokens, and evicting the middle, lets a model read and
write an unbounded stream at constant cost with stable perplexity (Xiao et al., 2023).

Why positions matter: RoPE makes attention depend on the distance between a query and a key.
The cache numbers its tokens by *cache slot*: the sinks sit at 0..sinks-1, the window right after
them, and a new token at the slot after the last cached one. When tokens are evicted, the kept
window keys are rotated back by the number of evicted tokens (``reposition=True``), so every
position the model ever sees stays below ``sinks + window + chunk``, inside the trained length.
Keys are stored already rotated; moving a key by ``d`` positions is one more rotation by
``d * inv_freq`` (done in fp32 with fp64 angles, only on the rotary part of the head).

How positions reach the model: a manual ``model(input_ids, cache=cache)`` loop leaves positions to
the model, which numbers new tokens from ``cache.get_seq_length()`` -- the number of cached slots
-- so queries and keys agree by construction. ``generate()`` instead numbers tokens from the start
of the stream (it increments its own ``position_ids``). Each layer reads the positions the model
used (they arrive in ``update``'s kwargs) and, when they differ from the slot numbering, rotates the
keys it hands to attention by that offset: relative distances are then exactly the slot ones, and
both entry points give the same attention scores (up to fp32 rounding of large angles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from ..errors import ConfigError, ModelError

__all__ = ["Eviction", "RopeShift", "SinkCache", "SinkLayer", "SinkPolicy", "cache_nbytes"]


@dataclass(frozen=True)
class Eviction:
    """What to keep of a full cache: slots ``[0, sinks)`` and ``[start, length)``.

    The kept window moves down to start at slot ``sinks``, i.e. by ``shift`` positions.
    """

    sinks: int
    start: int

    @property
    def shift(self) -> int:
        """How many positions the kept window moves back (= the number of evicted tokens)."""
        return self.start - self.sinks


@dataclass(frozen=True)
class SinkPolicy:
    """Keep the first ``sinks`` tokens and the last ``window`` tokens; evict everything between.

    ``sinks=0`` is plain window attention (the baseline that StreamingLLM fixes).
    """

    sinks: int = 4
    window: int = 1020

    def __post_init__(self) -> None:
        if not isinstance(self.sinks, int) or self.sinks < 0:
            raise ConfigError(f"sinks must be an integer >= 0, got {self.sinks!r}")
        if not isinstance(self.window, int) or self.window < 1:
            raise ConfigError(f"window must be an integer >= 1, got {self.window!r}")

    @property
    def capacity(self) -> int:
        """The most tokens a layer holds between forward passes."""
        return self.sinks + self.window

    def evict(self, length: int) -> Eviction | None:
        """Which of ``length`` cached tokens to keep, or ``None`` while everything still fits."""
        if length <= self.capacity:
            return None
        return Eviction(sinks=self.sinks, start=length - self.window)


class RopeShift:
    """Moves RoPE-rotated keys along the position axis: ``R(p) k  ->  R(p + delta) k``.

    Uses the rotate-half layout of Llama-family models (pairs ``(i, i + rotary_dim/2)``), and
    rotates only the first ``rotary_dim = 2 * len(inv_freq)`` channels of each head, which is what
    partial-rotary models (Phi, StableLM, GPT-NeoX...) do; the rest pass through unchanged. The
    rotation is a pure one: the model's ``attention_scaling`` is already inside the stored keys.
    """

    def __init__(self, inv_freq: torch.Tensor) -> None:
        self.inv_freq = inv_freq.detach().to(device="cpu", dtype=torch.float64)
        self.rotary_dim = 2 * self.inv_freq.numel()
        # A decode step evicts the same number of tokens in every layer: compute cos/sin once.
        self._memo: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _cos_sin(self, delta: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (delta, device)
        if key not in self._memo:
            if len(self._memo) > 16:
                self._memo.clear()
            angle = delta * self.inv_freq  # fp64: exact enough for any realistic delta
            angle = torch.cat((angle, angle))
            self._memo[key] = (
                angle.cos().to(device=device, dtype=torch.float32),
                angle.sin().to(device=device, dtype=torch.float32),
            )
        return self._memo[key]

    def __call__(self, keys: torch.Tensor, delta: int) -> torch.Tensor:
        """Return ``keys`` (``[..., head_dim]``) moved by ``delta`` positions (fp32 math)."""
        if delta == 0 or keys.shape[-2] == 0:
            return keys
        return self.rotate(keys, *self._cos_sin(delta, keys.device))

    def move(self, keys: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """Return ``keys`` (``[..., tokens, head_dim]``) with each token moved by its own delta.

        ``deltas`` (integers) broadcasts against ``keys.shape[:-1]``: the scored caches close the
        gaps left by evicted tokens, so every kept token moves by a different amount.
        """
        if keys.shape[-2] == 0:
            return keys
        low, high = (int(bound) for bound in deltas.aminmax())
        if low == high == 0:
            return keys
        # One eviction per decode step: the tokens after it move by one, the rest stay.
        delta = low if high == 0 else high if low == 0 else 0
        if delta and bool(((deltas == 0) | (deltas == delta)).all()):
            return torch.where((deltas == delta)[..., None], self(keys, delta), keys)
        distinct, which = deltas.unique(return_inverse=True)
        cos, sin = self.tables(distinct, keys.device)
        which = which.to(keys.device)
        return self.rotate(keys, cos[which], sin[which])

    def tables(self, deltas: torch.Tensor, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 cos and sin (``[len(deltas), rotary_dim]`` on ``device``) moving a token by each
        of ``deltas`` positions, from fp64 angles: for callers that rotate many tensors by the same
        per-token deltas (Self-Extend and DCA reuse them in every layer)."""
        angle = deltas.to(device="cpu", dtype=torch.float64).reshape(-1, 1) * self.inv_freq
        angle = torch.cat((angle, angle), dim=-1)
        return (angle.cos().to(device=device, dtype=torch.float32),
                angle.sin().to(device=device, dtype=torch.float32))

    def rotate(self, keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate-half RoPE by ``cos``/``sin`` on the first ``rotary_dim`` channels of ``keys``."""
        if keys.shape[-1] < self.rotary_dim:
            raise ModelError(
                f"head_dim {keys.shape[-1]} is smaller than the rotary dim {self.rotary_dim}"
            )
        rot = keys[..., : self.rotary_dim].float()
        half = self.rotary_dim // 2
        rotated = rot * cos + torch.cat((-rot[..., half:], rot[..., :half]), dim=-1) * sin
        rotated = rotated.to(keys.dtype)
        if self.rotary_dim == keys.shape[-1]:
            return rotated
        return torch.cat((rotated, keys[..., self.rotary_dim :]), dim=-1)


def _model_offset(kwargs: dict[str, Any], stored_at: int, new: int) -> int:
    """How far the model's positions for the new tokens are from where the layer stores them
    (``stored_at``: the next cache slot, or the stream index for stream positions).

    transformers' attention layers pass their kwargs (with ``position_ids``) on to the cache as
    ``kwargs=...``. A manual forward loop gives the cache length; ``generate()`` gives the
    position in the whole stream. Without position ids we assume the layer's own numbering.
    """
    inner = kwargs.get("kwargs")
    position_ids = inner.get("position_ids") if isinstance(inner, dict) else None
    if position_ids is None:
        position_ids = kwargs.get("position_ids")
    if position_ids is None:
        return 0
    row = position_ids.reshape(-1, position_ids.shape[-1])[0]
    first, last = int(row[0]), int(row[-1])
    if last - first != new - 1:
        raise ConfigError(
            "SinkCache needs consecutive position ids for the new tokens "
            f"(got {first}..{last} for {new} tokens); leave position_ids to the model"
        )
    return first - stored_at


class SinkLayer(DynamicLayer):
    """One layer's sink + window cache (see the module docstring for the position scheme).

    ``update`` returns everything attention needs for this forward -- the cached tokens plus the
    new ones -- and then stores only what the policy keeps. So a chunk of ``q`` tokens attends
    causally to the ``<= sinks + window`` cached tokens and to its own earlier tokens: a chunk
    longer than the window is attended in full (its tail gets more context than the window),
    and only afterwards is the cache cut back to ``sinks + window``.
    """

    is_croppable = False

    def __init__(self, policy: SinkPolicy, shift: RopeShift, reposition: bool = True) -> None:
        super().__init__()
        self.policy = policy
        self.shift = shift
        self.reposition = reposition
        self.seen = 0  # tokens that went through this layer since the last reset

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if key_states.shape[0] != 1:
            raise ConfigError(
                f"SinkCache supports batch size 1 only (got {key_states.shape[0]}): rows with "
                "different padding would need different evictions and positions"
            )
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self.keys is not None and self.values is not None  # lazy_initialization's
        length, new = self.get_seq_length(), key_states.shape[-2]
        offset = _model_offset(kwargs, self._stored_at(length), new)

        # Keys for attention live in the model's frame; stored keys in the layer's (_stored_at).
        stored_new = self.shift(key_states, -offset)
        keys = torch.cat([self.keys, stored_new], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        if offset == 0:
            attention_keys = keys
        else:
            attention_keys = torch.cat([self.shift(self.keys, offset), key_states], dim=-2)

        self.keys, self.values = self._evict(keys, values)
        self.seen += new
        return attention_keys, values

    def _stored_at(self, length: int) -> int:
        """The position the next token's key is stored at: its cache slot."""
        return length

    def _evict(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self.policy.evict(keys.shape[-2])
        if plan is None:
            return keys, values
        window_keys = keys[..., plan.start :, :]
        if self.reposition:
            window_keys = self.shift(window_keys, -plan.shift)
        return (
            torch.cat([keys[..., : plan.sinks, :], window_keys], dim=-2),
            torch.cat([values[..., : plan.sinks, :], values[..., plan.start :, :]], dim=-2),
        )

    def get_max_length(self) -> int:
        return self.policy.capacity

    def crop(self, tokens_to_remove: int) -> None:
        raise ConfigError("SinkCache cannot be cropped: evicted tokens are gone for good")

    def batch_repeat_interleave(self, repeats: int) -> None:
        if repeats != 1:
            raise ConfigError(
                "SinkCache supports batch size 1 only (no beams, no num_return_sequences)"
            )

    def reset(self) -> None:
        super().reset()
        self.seen = 0


class SinkCache(Cache):
    """A transformers ``Cache`` that keeps ``sinks`` first tokens + a ``window`` of recent ones.

    Memory per layer never exceeds ``sinks + window`` tokens between forward passes, however long
    the stream. The model is needed for its RoPE frequencies (``ModelError`` if it has none).

    Example::

        cache = SinkCache(model, sinks=4, window=1020)
        for chunk in token_chunks:            # positions are left to the model
            out = model(input_ids=chunk, cache=cache)
        model.generate(input_ids, cache=SinkCache(model), max_new_tokens=5000)

    Args:
        model: a RoPE decoder (Llama, Mistral, Qwen, Phi, Gemma-3...), used for each layer's
            ``inv_freq`` and the depth.
        sinks: first tokens never evicted (0 gives plain window attention).
        window: most recent tokens kept.
        reposition: re-rotate the kept window after each eviction so positions stay contiguous.
            ``False`` only exists to show what goes wrong without it: kept keys keep stale
            positions while new tokens are numbered from the cache length.

    Limits: batch size 1 and no padding; ``generate()`` should start from a fresh cache (its
    prefill logic assumes ``get_seq_length()`` counts every token seen, which a sink cache does
    not); rotate-half RoPE layouts only; frequencies are read once, so RoPE types whose
    frequencies change with the sequence length ("dynamic", "longrope") are used at the
    frequencies the model had when the cache was built.

    Sliding-window layers (Gemma-3's local layers): they hold the same sinks + window slots as
    the global layers, and are re-rotated with their own (local) frequencies, but the model's
    sliding mask lets a query at slot ``q`` see only slots ``> q - sliding_window``. So while
    ``sinks + window + chunk <= sliding_window`` they see the whole cache, sinks included;
    beyond that they see the most recent ``sliding_window`` slots and not the sinks -- as in the
    dense model, whose local layers never see the first tokens once past their window. The
    sinks act through the global layers only.
    """

    def __init__(
        self, model: Any, *, sinks: int = 4, window: int = 1020, reposition: bool = True
    ) -> None:
        self.policy = SinkPolicy(sinks=sinks, window=window)
        self.reposition = reposition
        super().__init__(layers=[SinkLayer(self.policy, shift, reposition)
                                 for shift in layer_shifts(model)])

    @property
    def sinks(self) -> int:
        return self.policy.sinks

    @property
    def window(self) -> int:
        return self.policy.window

    @property
    def seen_tokens(self) -> int:
        """Tokens streamed through the cache so far (the cache itself holds at most capacity)."""
        first = self.layers[0] if self.layers else None
        return first.seen if isinstance(first, SinkLayer) else 0

    def nbytes(self) -> int:
        """Bytes held by the cached keys and values, all layers."""
        return cache_nbytes(self)


def layer_shifts(model: Any) -> list[RopeShift]:
    """One key rotation per decoder layer, shared by layers with the same frequencies (every
    layer of a Llama shares one; Gemma-3's local and global layers each share theirs).

    ``ModelError`` for an encoder-decoder or a model without RoPE.
    """
    from ..models.rotary import layer_inv_freqs

    config = model.config.get_text_config(decoder=True)
    if getattr(config, "is_encoder_decoder", False):
        raise ModelError("position-shifting KV caches are for decoder-only models")
    shifts: dict[int, RopeShift] = {}
    freqs = layer_inv_freqs(model)  # ModelError when the model has no RoPE
    for inv_freq in freqs:
        shifts.setdefault(id(inv_freq), RopeShift(inv_freq))
    return [shifts[id(inv_freq)] for inv_freq in freqs]


def cache_nbytes(cache: Cache) -> int:
    """Bytes held by any transformers cache's keys and values (for memory comparisons)."""
    total = 0
    for layer in cache.layers:
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total
