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

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .adapters import as_message
from .errors import ConfigError, InvalidMessageError
from .messages import SYSTEM_ROLES, Message, Pending, check_conversation, check_next
from .tokens import TokenCounter
from .trim import DEFAULT_LOW_WATER, CachePolicy, Cut, Prefix, pinned_count, plan_trim

__all__ = ["CACHE_PRICE_RATIOS", "POLICIES", "TRIM_STRATEGIES", "CacheReport", "Request", "replay",
           "trimmer"]

#: Cached-token prices as a fraction of the uncached price the report shows (OpenAI bills
#: cached input at 0.5 or less of the price, Anthropic cache reads at 0.1).
CACHE_PRICE_RATIOS = (0.5, 0.1)

PROGRESS_STEP = 500
"""How often :func:`replay` reports progress, in messages."""

Trimmer = Callable[[Sequence[Message]], Sequence[Message]]


class GrowingTrim:
    """:func:`~contextwindow.trim.trim` over a conversation that grows between calls, as in a
    replay: each message is converted and priced once, and the cache policy's cut continues
    from the previous call. Called afresh per request, ``trim`` would re-price the window and
    replay the cache policy from the first message: a 44,000-message report would be
    quadratic. A conversation that is not the previous one extended starts over.

    The tool-call pairing is checked as messages arrive: while the history so far is valid,
    every window of it is (the pinned head never ends between a call and its results, and
    the window starts at a user message), so only a broken history has its window checked."""

    def __init__(self, max_tokens: int, counter: TokenCounter,
                 cache_policy: CachePolicy | None = None) -> None:
        self.max_tokens, self.counter, self.cache_policy = max_tokens, counter, cache_policy
        self._raw: list[Any] = []  # the messages as given (their identity tells a new history)
        self._messages: list[Message] = []
        self._costs: list[int] = []
        self._cut: Cut | None = None
        self._pending: Pending | None = Pending()  # None once the history broke pairing

    def __call__(self, conversation: Sequence[Any]) -> list[Any]:
        self._extend(conversation)
        messages = self._messages  # exactly the conversation's messages, converted
        pinned = pinned_count(messages)
        has_system = bool(messages) and messages[0].role in SYSTEM_ROLES
        plan = plan_trim(messages, self._costs.__getitem__, self.max_tokens,
                         self.counter.overhead(has_system=has_system), pinned=pinned,
                         cache_policy=self.cache_policy, since=self._cut)
        self._cut = plan.cut
        if self._pending is None:
            kept = plan.select(range(len(conversation)))
            check_conversation([messages[k] for k in kept], kept)
        return plan.select(conversation)

    def _extend(self, conversation: Sequence[Any]) -> None:
        seen = len(self._raw)
        if seen and (len(conversation) < seen or conversation[0] is not self._raw[0]
                     or conversation[seen - 1] is not self._raw[-1]):
            self._raw, self._messages, self._costs, self._cut = [], [], [], None
            self._pending, seen = Pending(), 0
        for message in conversation[seen:]:
            converted = as_message(message)
            if self._pending is not None:
                try:
                    self._pending = check_next(self._pending, converted, len(self._raw))
                except InvalidMessageError:
                    self._pending = None
            self._raw.append(message)
            self._messages.append(converted)
            self._costs.append(self.counter.count_message(converted))


def _newest(max_tokens: int, counter: TokenCounter, low_water: float) -> Trimmer:
    return GrowingTrim(max_tokens, counter)


def _cache(max_tokens: int, counter: TokenCounter, low_water: float) -> Trimmer:
    return GrowingTrim(max_tokens, counter, CachePolicy(low_water))


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
    """The named policy (:data:`POLICIES`) as a function from a conversation to its prompt
    (stateful: meant for one growing conversation, as :func:`replay` calls it)."""
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
    in the local engine's prefix cache. The run of identical objects is found at C speed (a
    replay compares a window-long run per request); equality decides from there on."""
    same = list(map(operator.is_, a, b))
    try:
        n = same.index(False)
    except ValueError:
        return len(same)
    for x, y in zip(a[n:], b[n:], strict=False):
        if x != y:
            break
        n += 1
    return n


def replay(conversation: Sequence[Message], policy: Trimmer, counter: TokenCounter,
           budget: int, *, name: str = "policy",
           progress: Callable[[int], None] | None = None) -> CacheReport:
    """Call ``policy`` on the conversation so far before every assistant message, as a chat
    application would, and measure each prompt against the previous one.

    Linear in the conversation for a policy that is (the named ones are, see
    :class:`GrowingTrim`): the policy sees a view of the prefix, not a copy, and each message
    of the conversation is priced once (a message the policy makes, such as a summary, when
    it appears). ``progress(k)`` is told every :data:`PROGRESS_STEP` messages replayed, and at
    the end."""
    conversation = list(conversation)
    position = {id(message): k for k, message in enumerate(conversation)}
    costs = [counter.count_message(message) for message in conversation]

    def tokens(messages: list[Any]) -> int:
        found = list(map(position.get, map(id, messages)))
        if None not in found:
            return sum(map(costs.__getitem__, found))  # type: ignore[arg-type]
        return sum(costs[k] if k is not None else counter.count_message(m)
                   for k, m in zip(found, messages, strict=True))

    requests: list[Request] = []
    previous: list[Any] = []
    for k, message in enumerate(conversation):
        if progress is not None and (k + 1) % PROGRESS_STEP == 0:
            progress(k + 1)
        if message.role != "assistant" or k == 0:
            continue
        prompt = list(policy(Prefix(conversation, k)))
        shared = common_prefix(previous, prompt)
        has_system = bool(prompt) and as_message(prompt[0]).role in SYSTEM_ROLES
        requests.append(Request(
            prompt_tokens=tokens(prompt) + counter.overhead(has_system=has_system),
            cached_tokens=tokens(prompt[:shared]), messages=len(prompt),
            kept_prefix=shared == len(previous)))
        previous = prompt
    if progress is not None:
        progress(len(conversation))
    return CacheReport(name, budget, tuple(requests))
