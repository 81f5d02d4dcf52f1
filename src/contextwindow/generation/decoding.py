"""Token ids to text for a streamed reply: incremental detokenization and stop strings.

Both work on deltas at constant cost per token, so a long reply streams as cheaply as a short one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class IncrementalDecoder:
    """Token ids in, text deltas out, never splitting a multi-byte character.

    Decodes a short sliding span (the previous read offset onwards), so the cost per token is
    constant however long the reply is; the concatenated deltas equal ``decode(all ids)`` for
    byte-level BPE tokenizers.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return after[len(before):] if after.startswith(before) else ""


class StopMatcher:
    """Holds back text that could be the start of a stop string; cuts at the first stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Add ``delta``; return the text now safe to show (``stopped`` turns True at a stop)."""
        if self.stopped:
            return ""
        self.text += delta
        if not self.stops:
            out, self.emitted = self.text[self.emitted:], len(self.text)
            return out
        search_from = max(0, self.emitted - self.longest + 1)
        hits = [i for i in (self.text.find(s, search_from) for s in self.stops) if i >= 0]
        if hits:
            cut = min(hits)
            self.stopped = True
            self.text = self.text[:cut]
            out, self.emitted = self.text[self.emitted:], cut
            return out
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        safe = max(self.emitted, len(self.text) - hold)
        out, self.emitted = self.text[self.emitted:safe], safe
        return out

    def finish(self) -> str:
        """The held-back tail once generation ended without a stop string."""
        out, self.emitted = self.text[self.emitted:], len(self.text)
        return out
