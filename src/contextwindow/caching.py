"""What a prompt cache saves: replay a conversation request by request through a trimming policy.

Providers (OpenAI, Anthropic) and serving engines (vLLM, llama.cpp, our own server) reuse the
longest prefix a prompt shares with an earlier one. A policy that shifts its window every turn
destroys that prefix once the conversation fills the budget; :class:`~contextwindow.trim.
CachePolicy` keeps it. :func:`replay` measures the difference for any policy, on any
conversation: each time the model is called (before every assistant message), the prompt the
policy builds, how many of its tokens are an exact message prefix of the previous prompt, and
what that bills at a cached-token price ratio.

Text side: no model, no torch; the plot is :func:`contextwindow.evaluate.report.plot_cache_billed`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .messages import Message
from .tokens import TokenCounter
from .trim import DEFAULT_LOW_WATER, CachePolicy, trim

__all__ = ["CACHE_PRICE_RATIOS", "POLICIES", "TRIM_STRATEGIES", "CacheReport", "Request", "replay",
           "trimmer"]

#: Cached-token prices as a fraction of the uncached price the report shows (OpenAI bills
#: cached input at 0.5 or less of the price, Anthropic cache reads at 0.1).
CACHE_PRICE_RATIOS = (0.5, 0.1)

Trimmer = Callable[[list[Message]], Sequence[Message]]


def _newest(max_tokens: int, counter: TokenCounter, low_water: float) -> Trimmer:
    return lambda prompt: trim(prompt, max_tokens, counter)


def _cache(max_tokens: int, counter: TokenCounter, low_water: float) -> Trimmer:
    policy = CachePolicy(low_water)
    return lambda prompt: trim(prompt, max_tokens, counter, cache_policy=policy)


#: The trimming policies :func:`trimmer` builds, by name: ``newest`` is :func:`trim`'s default
#: (the newest turns that fit), ``cache`` is :class:`CachePolicy` (``low_water`` is its only
#: setting; ``newest`` has none).
TRIM_STRATEGIES: Mapping[str, Callable[[int, TokenCounter, float], Trimmer]] = {
    "newest": _newest,
    "cache": _cache,
}
POLICIES = TRIM_STRATEGIES  # the name before the glossary (DEVELOPERS.md); kept


def trimmer(name: str, max_tokens: int, counter: TokenCounter, *,
            low_water: float = DEFAULT_LOW_WATER) -> Trimmer:
    """The named policy (:data:`POLICIES`) as a function from a conversation to its prompt."""
    if name not in POLICIES:
        raise ConfigError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES)}")
    return POLICIES[name](max_tokens, counter, low_water)


@dataclass(frozen=True, slots=True)
class Request:
    """One model call: its prompt's tokens, and those an exact message prefix of the previous
    prompt (what a prefix cache serves)."""

    prompt_tokens: int
    cached_tokens: int
    messages: int  # messages in the prompt
    kept_prefix: bool  # the whole previous prompt is a prefix of this one (no cut)

    def billed(self, ratio: float) -> float:
        """Tokens billed when a cached token costs ``ratio`` of an uncached one."""
        return self.prompt_tokens - self.cached_tokens + ratio * self.cached_tokens


@dataclass(frozen=True)
class CacheReport:
    """One policy's requests over one conversation, and the figures derived from them."""

    policy: str
    budget: int
    requests: tuple[Request, ...]

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.requests)

    @property
    def reuse(self) -> float:
        """Fraction of all prompt tokens served from the previous prompt's prefix."""
        return sum(r.cached_tokens for r in self.requests) / max(1, self.prompt_tokens)

    @property
    def mean_fill(self) -> float:
        """Mean prompt size as a fraction of the budget."""
        return self.prompt_tokens / max(1, len(self.requests)) / self.budget

    @property
    def cuts(self) -> int:
        """Requests whose prompt does not extend the previous one (the first excluded)."""
        return sum(not r.kept_prefix for r in self.requests[1:])

    def billed(self, ratio: float) -> float:
        """Total billed tokens at cached price ``ratio``."""
        return sum(r.billed(ratio) for r in self.requests)

    def cumulative_billed(self, ratio: float) -> list[float]:
        """Billed tokens after each request (the plot's curve)."""
        total, out = 0.0, []
        for request in self.requests:
            total += request.billed(ratio)
            out.append(total)
        return out

    def summary(self, ratios: Sequence[float] = CACHE_PRICE_RATIOS) -> dict[str, Any]:
        """The report's figures as plain data (for JSON and tables)."""
        return {
            "policy": self.policy, "requests": len(self.requests), "budget": self.budget,
            "prompt_tokens": self.prompt_tokens, "reuse": round(self.reuse, 6),
            "mean_fill": round(self.mean_fill, 6), "cuts": self.cuts,
            "billed": {str(r): round(self.billed(r)) for r in ratios},
            "billed_ratio": {str(r): round(self.billed(r) / max(1, self.prompt_tokens), 6)
                             for r in ratios},
        }


def common_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items ``a`` and ``b`` share: messages of two prompts here, token ids
    in the local engine's prefix cache."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def replay(conversation: Sequence[Message], policy: Trimmer, counter: TokenCounter,
           budget: int, *, name: str = "policy") -> CacheReport:
    """Call ``policy`` on the conversation so far before every assistant message, as a chat
    application would, and measure each prompt against the previous one."""
    conversation = list(conversation)
    requests: list[Request] = []
    previous: list[Message] = []
    for k, message in enumerate(conversation):
        if message.role != "assistant" or k == 0:
            continue
        prompt = list(policy(conversation[:k]))
        shared = common_prefix(previous, prompt)
        requests.append(Request(
            prompt_tokens=counter.count_messages(prompt),
            cached_tokens=sum(counter.count_message(m) for m in prompt[:shared]),
            messages=len(prompt), kept_prefix=shared == len(previous)))
        previous = prompt
    return CacheReport(name, budget, tuple(requests))
