"""KV prefix reuse across requests: a new prompt prefills only what a recent request did not.

Why: a chat client resends the whole conversation every turn, and under the cache-aware trim
policy each prompt extends the previous prompt + reply until the next cut. Prefilling those
thousands of tokens again is nearly all of the time to the first token; vLLM's automatic prefix
caching and llama.cpp's slot cache skip it, and so does this.

How: after a request, the generator stores the keys and values of every token it fed (prompt
and reply) under those token ids, in a least-recently-used map bounded by bytes. A new prompt
finds the entry with the longest common prefix of *token ids* -- not text: the chat template may
render a reply differently from the tokens that were generated, so only what matches token for
token is reused -- copies that many tokens' keys and values into its own fresh cache, and
prefills the rest. At least the prompt's last token is always prefilled (its logits start the
reply).

Exactness and safety:

* an entry is stored only if every layer still holds every token fed: nothing evicted by the
  sink cache and no sliding-window layer cut, so its keys and values are exactly what a dense
  prefill of those ids computes (up to float rounding of the chunking);
* entries are never modified and a request always gets a copy, so two requests that share a
  prefix never share a tensor, and an entry evicted while being copied stays valid until done;
* the byte budget is enforced before an entry goes in (the LRU entries go first), so the stored
  bytes never exceed it, not even for a moment; an entry larger than the budget is not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..caching import common_prefix
from ..errors import ConfigError


@dataclass(frozen=True)
class _Entry:
    """The keys and values of ``ids``, one (keys, values) pair per layer."""

    ids: tuple[int, ...]
    layers: tuple[tuple[Any, Any], ...]
    nbytes: int


def _layer_tensors(cache: Any, length: int) -> tuple[tuple[Any, Any], ...] | None:
    """Each layer's (keys, values) if every layer holds exactly ``length`` tokens, else None."""
    layers = []
    for layer in cache.layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or values is None or keys.dim() != 4 or keys.shape[-2] != length:
            return None
        layers.append((keys, values))
    return tuple(layers)


class PrefixCache:
    """Recent requests' KV caches by token ids: longest-prefix lookup, LRU eviction by bytes.

    Args:
        max_bytes: the most bytes of keys and values kept (0 turns reuse off).
    """

    def __init__(self, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ConfigError(f"the prefix cache size must be an integer >= 0, not {max_bytes!r}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # least recently used first
        self._next_key = 0
        self._lock = threading.Lock()
        self.nbytes = 0  # bytes held now
        self.peak_bytes = 0  # the most bytes ever held at once
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def restore(self, ids: Sequence[int], cache: Any) -> int:
        """Fill the empty ``cache`` with the longest cached prefix of ``ids`` (never all of them)
        and return its length in tokens (0: nothing reusable)."""
        with self._lock:
            best, reuse = None, 0
            for key, entry in self._entries.items():
                n = min(common_prefix(entry.ids, ids), len(ids) - 1)
                if n > reuse:
                    best, reuse = key, n
            if best is None:
                return 0
            self._entries.move_to_end(best)
            layers = self._entries[best].layers
        if len(layers) != len(cache.layers):
            return 0
        for index, (keys, values) in enumerate(layers):  # update() copies: the entry stays intact
            cache.layers[index].update(keys[..., :reuse, :], values[..., :reuse, :])
        return reuse

    def store(self, ids: Sequence[int], cache: Any) -> bool:
        """Keep ``cache`` (which must not be used afterwards) as the keys and values of ``ids``.

        Returns False when it cannot be reused exactly (a layer evicted or cut tokens) or is
        larger than the whole budget. Entries whose ids are a prefix of ``ids`` go: this one
        serves everything they could.
        """
        layers = _layer_tensors(cache, len(ids)) if ids else None
        if layers is None:
            return False
        nbytes = sum(t.numel() * t.element_size() for pair in layers for t in pair)
        if nbytes > self.max_bytes:
            return False
        entry = _Entry(tuple(ids), layers, nbytes)
        with self._lock:
            for key, old in list(self._entries.items()):
                if entry.ids[:len(old.ids)] == old.ids:
                    self._drop(key)
            while self.nbytes + nbytes > self.max_bytes:
                self._drop(next(iter(self._entries)))
                self.evictions += 1
            self._entries[self._next_key] = entry
            self._next_key += 1
            self.nbytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.nbytes)
        return True

    def _drop(self, key: int) -> None:
        self.nbytes -= self._entries.pop(key).nbytes
