"""Fitting a conversation to a remote model's window, with counts only (no model at hand).

The local engine fits against its own chat template (:meth:`Generator.fit`); a gateway in front
of another server has only a :class:`~contextwindow.tokens.TokenCounter` for the upstream model:
tiktoken plus chat framing for OpenAI models (exact), or the model's own tokenizer and chat
template (``TokenCounter.from_hf``). The policies are the same: ``trim``, ``sinks``, ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import BudgetExceededError, ConfigError
from ..generation.engine import POLICIES, SINKS_KEEP_FIRST
from ..messages import SYSTEM_ROLES, Message
from ..tokens import TokenCounter
from ..trim import trim


@dataclass(frozen=True)
class Fitted:
    """What is sent upstream, and what the policy left out (the fields of ``FitResult``)."""

    messages: list[Message]
    prompt_tokens: int
    original_tokens: int
    original_messages: int
    budget: int
    reserve: int

    @property
    def trimmed_messages(self) -> int:
        return self.original_messages - len(self.messages)

    @property
    def trimmed_tokens(self) -> int:
        return max(0, self.original_tokens - self.prompt_tokens)


@dataclass(frozen=True)
class WindowPolicy:
    """A window of ``context`` tokens shared by prompt and reply, and what to do when the
    conversation is longer: trim it (``keep_first`` messages after the system prompt pinned;
    2 by default for ``sinks``) or refuse it (``none``)."""

    counter: TokenCounter
    context: int
    policy: str = "trim"
    keep_first: int | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown policy {self.policy!r}; expected one of "
                              f"{', '.join(POLICIES)}")
        if self.context < 16:
            raise ConfigError(f"the context window must be >= 16 tokens, not {self.context}")
        if self.keep_first is None:
            object.__setattr__(self, "keep_first",
                               SINKS_KEEP_FIRST if self.policy == "sinks" else 0)

    def fit(self, messages: Sequence[Message], max_tokens: int, *,
            counted: tuple[int, int] = (0, 0)) -> Fitted:
        """The messages that fit ``context - max_tokens`` prompt tokens.

        ``counted`` is ``(n, tokens)`` when the first ``n`` messages are already known to cost
        ``tokens`` (a stored session), so a long history is not summed again on every turn.
        Raises :class:`BudgetExceededError` as ``Generator.fit`` does.
        """
        if max_tokens >= self.context:
            raise BudgetExceededError(
                f"max_tokens ({max_tokens}) must be smaller than the context window "
                f"({self.context} tokens)", budget=self.context, required=max_tokens, pinned=0)
        budget = self.context - max_tokens
        known, known_tokens = counted
        has_system = bool(messages) and messages[0].role in SYSTEM_ROLES
        original = (known_tokens + sum(map(self.counter.count_message, messages[known:]))
                    + self.counter.overhead(has_system=has_system))
        if self.policy == "none" or original <= budget:
            if original > budget:
                raise BudgetExceededError(
                    f"This model's maximum context length is {self.context} tokens. However, "
                    f"you requested {original + max_tokens} tokens ({original} in the messages, "
                    f"{max_tokens} for the completion). Please reduce the length of the "
                    "messages or completion.", budget=budget, required=original, pinned=0)
            return Fitted(list(messages), original, original, len(messages), budget, max_tokens)
        kept = trim(messages, budget, self.counter, keep_first=self.keep_first or 0)
        return Fitted(kept, self.counter.count_messages(kept), original, len(messages), budget,
                      max_tokens)
