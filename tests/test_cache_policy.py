"""The cache-aware trimming policy: every trimming rule still holds, the cut is a function of the
history (a reloaded memory cuts the same), and between cuts each prompt extends the previous one.

The oracle replays the policy's rule from its statement, with whole-candidate counts
(``count_messages``) and nothing from ``contextwindow.trim``.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from oracles import best_context, pinned_head
from strategies import conversations as random_conversations

from contextwindow.caching import replay, trimmer
from contextwindow.cli import main
from contextwindow.errors import BudgetExceededError, ConfigError, SummarizerError
from contextwindow.memory import SummaryBufferMemory, TokenBufferMemory
from contextwindow.messages import Message, ToolCall
from contextwindow.samples import sample_conversation
from contextwindow.stores import SQLiteStore
from contextwindow.summarize import FunctionSummarizer
from contextwindow.tokens import TokenCounter
from contextwindow.trim import CachePolicy, plan_trim, trim

COUNTER = TokenCounter.approximate()


def cost(messages: list[Message]) -> int:
    return COUNTER.count_messages(messages)


def oracle(messages: list[Message], budget: int, low_water: float, keep_first: int = 0
           ) -> list[Message] | None:
    """The rule, replayed after each message: while ``head + messages[start:m]`` exceeds the
    budget, jump to the oldest user message after ``start`` whose suffix fits
    ``int(low_water * budget)``, else the budget; if none fits, wait. None: trim must raise."""
    head_len = pinned_head(messages, keep_first)
    head, start = messages[:head_len], head_len
    if cost(head) > budget:
        return None
    for m in range(head_len + 1, len(messages) + 1):
        if cost(head + messages[start:m]) <= budget:
            continue
        users = [u for u in range(start + 1, m) if messages[u].role == "user"]
        for target in (int(budget * low_water), budget):
            fitting = [u for u in users if cost(head + messages[u:m]) <= target]
            if fitting:
                start = fitting[0]
                break
    kept = head + messages[start:]
    return kept if cost(kept) <= budget else None


def conversations(max_turns: int = 24) -> st.SearchStrategy[list[Message]]:
    return random_conversations(max_turns=max_turns, max_chars=90, max_calls=2)


# A fixed conversation for the budget edges: a system prompt, a tool round trip, four turns.
EDGE = [
    Message(role="system", content="be brief"),
    Message(role="user", content="weather in oslo"),
    Message(role="assistant", tool_calls=(ToolCall("c1", "f", "{}"),)),
    Message(role="tool", tool_call_id="c1", content="rain all day"),
    Message(role="assistant", content="rain"),
    Message(role="user", content="and tomorrow"),
    Message(role="assistant", content="sun"),
    Message(role="user", content="and the day after that, please"),
    Message(role="assistant", content="clouds, then sun again"),
    Message(role="user", content="thanks"),
]
EDGE_ALL = cost(EDGE)  # no cut at this budget, a cut at one less
EDGE_NEWEST = cost([EDGE[0], EDGE[9]])  # the least that fits: the newest user turn alone


def test_edge_budgets_are_what_the_examples_claim() -> None:
    assert (EDGE_ALL, EDGE_NEWEST) == (88, 16)
    policy = CachePolicy(0.5)
    assert trim(EDGE, EDGE_ALL, COUNTER, cache_policy=policy) == EDGE
    # One token short: the window jumps to the newest turn that fits under 0.5 x 87 = 43 tokens
    # when the last message arrives (the default policy would keep [0, 5:]).
    assert trim(EDGE, EDGE_ALL - 1, COUNTER, cache_policy=policy) == [EDGE[0], *EDGE[7:]]
    assert trim(EDGE, EDGE_ALL - 1, COUNTER) == [EDGE[0], *EDGE[5:]]
    assert trim(EDGE, EDGE_NEWEST, COUNTER, cache_policy=policy) == [EDGE[0], EDGE[9]]
    with pytest.raises(BudgetExceededError):
        trim(EDGE, EDGE_NEWEST - 1, COUNTER, cache_policy=policy)


@settings(max_examples=250, deadline=None, derandomize=True)
@given(conversations(), st.integers(1, 500), st.sampled_from([0.3, 0.6, 0.9, 1.0]),
       st.integers(0, 2))
@example(EDGE, EDGE_ALL, 0.6, 0)
@example(EDGE, EDGE_ALL - 1, 0.6, 0)
@example(EDGE, EDGE_NEWEST, 0.6, 0)
@example(EDGE, EDGE_NEWEST - 1, 0.6, 0)
@example(EDGE, EDGE_ALL - 1, 1.0, 2)
@example(EDGE, cost(EDGE[:5]) + cost([EDGE[9]]) - 3, 0.3, 2)
def test_cache_policy_keeps_every_trimming_rule(messages, budget, low_water, keep_first) -> None:
    expected = oracle(messages, budget, low_water, keep_first)
    policy = CachePolicy(low_water)
    if expected is None:
        # It raises exactly when the default policy raises: not even the newest turn fits.
        assert best_context(messages, budget, COUNTER, keep_first) is None
        with pytest.raises(BudgetExceededError) as info:
            trim(messages, budget, COUNTER, keep_first=keep_first, cache_policy=policy)
        assert info.value.budget == budget and info.value.required > budget
        return
    kept = trim(messages, budget, COUNTER, keep_first=keep_first, cache_policy=policy)
    assert kept == expected
    assert cost(kept) <= budget
    head = pinned_head(messages, keep_first)
    assert kept[:head] == messages[:head]  # the pinned head is kept
    rest = kept[head:]
    if len(rest) < len(messages) - head:  # something was dropped: the window is a suffix
        assert rest == messages[len(messages) - len(rest):]  # that starts at a user turn
        assert rest[0].role == "user"


@settings(max_examples=120, deadline=None, derandomize=True)
@given(conversations(max_turns=30), st.integers(40, 400), st.sampled_from([0.4, 0.6, 0.8]))
@example(EDGE, EDGE_ALL - 1, 0.5)
def test_without_a_cut_each_prompt_extends_the_previous_one(messages, budget, low_water
                                                            ) -> None:
    """Whenever the previous prompt plus what was added since fits the budget, that is exactly
    the next prompt; otherwise the window's start moved forward (a cut), never back."""
    policy = CachePolicy(low_water)
    head = pinned_head(messages, 0)
    previous: list[Message] | None = None
    previous_start = previous_end = 0
    for end in range(1, len(messages) + 1):
        try:
            prompt = trim(messages[:end], budget, COUNTER, cache_policy=policy)
        except BudgetExceededError:
            previous = None
            continue
        start = end - (len(prompt) - head)  # the prompt is messages[:head] + messages[start:end]
        assert prompt == messages[:head] + messages[start:end]
        if previous is not None:
            extended = previous + messages[previous_end:end]
            if cost(extended) <= budget:
                assert prompt == extended
            else:
                assert start > previous_start
        previous, previous_start, previous_end = prompt, start, end


def replay_memory(memory_of, conversation: list[Message], reopen_at: int | None = None
                  ) -> list[list[Message]]:
    """The view before each assistant message, adding the conversation one message at a time;
    with ``reopen_at``, the memory is closed there and a new one reopens the store."""
    memory, views = memory_of(), []
    for index, message in enumerate(conversation):
        if index == reopen_at:
            memory.store.close()
            memory = memory_of()
        if message.role == "assistant":
            views.append(memory.messages())
        memory.add_message(message)
    memory.store.close()
    return views


@pytest.mark.parametrize("reopen_at", [1, 40, 201, 300])
@pytest.mark.parametrize("keep_first", [0, 2])  # 2: the pinned head grows with the first adds
def test_a_reloaded_memory_gives_the_same_prompts(tmp_path, reopen_at: int, keep_first: int
                                                  ) -> None:
    conversation = sample_conversation(140, seed=3)
    policy = CachePolicy(0.6)

    def memory_of(name: str):
        return lambda: TokenBufferMemory(600, counter=COUNTER, cache_policy=policy,
                                         keep_first=keep_first,
                                         store=SQLiteStore(tmp_path / f"{name}.db"))

    straight = replay_memory(memory_of("straight"), conversation)
    reloaded = replay_memory(memory_of("reloaded"), conversation, reopen_at=reopen_at)
    assert reloaded == straight
    # ...and both equal the stateless trim on the history so far: the cut is the history's.
    points = [k for k, m in enumerate(conversation) if m.role == "assistant"]
    assert straight == [trim(conversation[:k], 600, COUNTER, cache_policy=policy,
                             keep_first=keep_first) for k in points]
    assert sum(a != b[:len(a)] for a, b in itertools.pairwise(straight)) >= 5


def test_a_stale_replay_state_is_ignored() -> None:
    history = sample_conversation(60, seed=1)
    policy = CachePolicy(0.6)

    def plan(budget: int, since=None):
        return plan_trim(history, lambda i: COUNTER.count_message(history[i]), budget,
                         COUNTER.overhead(has_system=True), pinned=1, cache_policy=policy,
                         since=since)

    fresh = plan(500)
    assert fresh.cut is not None and fresh.cut.upto == len(history)
    assert plan(500, since=plan(700).cut) == fresh  # another budget: replayed from scratch
    assert plan(500, since=fresh.cut) == fresh


def test_low_water_must_be_a_fraction() -> None:
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ConfigError):
            CachePolicy(bad)


def test_summary_changes_only_at_a_fold() -> None:
    """SummaryBufferMemory's view grows at its end between folds; a fold is the only cut."""
    summarizer = FunctionSummarizer(lambda previous, messages: f"{len(messages)} folded")
    memory = SummaryBufferMemory(500, summarizer, counter=COUNTER, max_summary_tokens=40)
    previous, folds = None, 0
    for message in sample_conversation(120, seed=5):
        memory.add_message(message)
        view = memory.messages()
        assert cost(view) <= 500
        if previous is not None and memory.summarizations == folds:
            assert view[:len(previous)] == previous
        folds, previous = memory.summarizations, view
    assert folds >= 5


@pytest.mark.filterwarnings("ignore::contextwindow.summarize.SummarizerWarning")
def test_a_degraded_summary_memory_trims_in_the_cache_rhythm() -> None:
    def failing(previous, messages):
        raise SummarizerError("down")

    memory = SummaryBufferMemory(400, FunctionSummarizer(failing), counter=COUNTER,
                                 on_error="trim", cache_policy=CachePolicy(0.6))
    policy_views, cuts = [], 0
    for message in sample_conversation(80, seed=2):
        memory.add_message(message)
        policy_views.append(memory.messages())
    for a, b in itertools.pairwise(policy_views):
        assert cost(b) <= 400
        cuts += b[:len(a)] != a
    history = memory.history()
    assert policy_views[-1] == trim(history, 400, COUNTER, cache_policy=CachePolicy(0.6))
    assert memory.degraded and memory.failures > 0 and 3 <= cuts <= len(policy_views) // 5


def test_replay_measures_reuse_and_fill() -> None:
    conversation = sample_conversation(120, seed=0)
    reports = {name: replay(conversation, trimmer(name, 1000, COUNTER), COUNTER, 1000, name=name)
               for name in ("newest", "cache")}
    cache, newest = reports["cache"], reports["newest"]
    assert len(cache.requests) == len(newest.requests) == 144  # 120 turns + 24 tool rounds
    # A small budget for these turns (~4% of it each): the cuts cost more than at 4,000.
    assert (round(cache.reuse, 4), round(cache.mean_fill, 4), cache.cuts) == (0.784, 0.7158, 23)
    assert (round(newest.reuse, 4), round(newest.mean_fill, 4), newest.cuts) == (
        0.2699, 0.8983, 99)
    assert cache.summary()["billed"] == {"0.5": 62670, "0.1": 30345}
    assert cache.billed(1.0) == cache.prompt_tokens == 103076
    assert cache.cumulative_billed(0.5)[-1] == pytest.approx(cache.billed(0.5))
    first, second = cache.requests[:2]
    assert (first.prompt_tokens, first.cached_tokens) == (42, 0)
    assert (second.prompt_tokens, second.cached_tokens, second.kept_prefix) == (116, 39, True)
    with pytest.raises(ConfigError):
        trimmer("fifo", 1000, COUNTER)


def test_cache_report_command(tmp_path, capsys) -> None:
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([m.to_openai() for m in sample_conversation(60, seed=0)]))
    assert main(["cache-report", str(path), "--max-tokens", "800", "--approximate",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    by_policy = {row["policy"]: row for row in result["policies"]}
    assert set(by_policy) == {"newest", "cache"}
    assert by_policy["cache"]["reuse"] > by_policy["newest"]["reuse"]
    assert by_policy["cache"]["requests"] == 72


@pytest.mark.parametrize("option", ["--strategy", "--policy"])  # --policy: the kept old name
def test_cache_report_compares_the_strategies_asked_for(option, tmp_path, capsys) -> None:
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([m.to_openai() for m in sample_conversation(30, seed=1)]))
    assert main(["cache-report", str(path), "--max-tokens", "600", "--approximate", option,
                 "cache", "--json"]) == 0
    assert [row["policy"] for row in json.loads(capsys.readouterr().out)["policies"]] == [
        "cache"]


def test_the_report_is_text_side(tmp_path) -> None:
    """cache-report runs without torch (the import-linter contract checks the imports)."""
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([m.to_openai() for m in sample_conversation(20, seed=0)]))
    code = ("import sys\nfrom contextwindow.cli import main\n"
            f"assert main(['cache-report', {str(path)!r}, '--max-tokens', '300', "
            "'--approximate', '--json']) == 0\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["policies"][1]["policy"] == "cache"


def test_the_local_generator_fits_cache_aware_by_default(tiny_chat_dir) -> None:
    """Consecutive requests of one conversation: with the default policy most prompts extend
    the previous prompt's token ids (what a KV prefix cache reuses); newest-first, few do."""
    from contextwindow.generation import Generator

    conversation = [m.to_openai() for m in sample_conversation(30, seed=1, tool_every=0)]

    def extensions(**options) -> tuple[int, int]:
        generator = Generator.load(str(tiny_chat_dir), context=512, **options)
        previous, extended, requests = None, 0, 0
        for k, message in enumerate(conversation):
            if message["role"] != "assistant":
                continue
            fit = generator.fit(conversation[:k], 16)
            expected = trim(conversation[:k], fit.budget, generator.counter,
                            cache_policy=generator.cache_policy)
            assert fit.messages == [generator.prepare([m])[0] for m in expected]
            extended += previous is not None and fit.prompt_ids[:len(previous)] == previous
            previous, requests = fit.prompt_ids, requests + 1
        return extended, requests

    assert Generator.load(str(tiny_chat_dir), context=512).cache_policy == CachePolicy()
    assert extensions() == (23, 30)
    assert extensions(cache_policy=None) == (10, 30)
