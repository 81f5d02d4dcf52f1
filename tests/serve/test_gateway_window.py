"""The gateway's window (``WindowPolicy``): the cache-aware cut, the summary that follows it, an
upstream-model summarizer and its key-facts fallback.

Conversations are replayed turn by turn as a gateway session sees them: the stored history
(store ids, its tokens counted) plus the new user message. Expected prompts come from ``trim``
with ``CachePolicy`` (or without, newest first); reuse figures from ``caching.replay``. The
last two tests run a real gateway in front of the fake upstream of ``test_gateway_fake.py``,
which answers summary requests with ``FAKE_SUMMARY`` (or 500 when asked to).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest
from loopback import loopback_upstream
from test_gateway_fake import FAKE_MODEL, FAKE_SUMMARY, Proc, start_gateway

from contextwindow.adapters import as_messages
from contextwindow.caching import replay, trimmer
from contextwindow.messages import SUMMARY_PREFIX, Message, new_id
from contextwindow.samples import sample_conversation
from contextwindow.serve import UpstreamBackend, WindowPolicy
from contextwindow.summarize import (
    DEFAULT_SYSTEM,
    FunctionSummarizer,
    KeyFactsSummarizer,
    cut_summary,
)
from contextwindow.tokens import TokenCounter
from contextwindow.trim import CachePolicy, trim
from contextwindow.window import Fitted

COUNTER = TokenCounter.for_model(FAKE_MODEL)
CONTEXT, REPLY = 700, 100
BUDGET = CONTEXT - REPLY


def conversation(turns: int, seed: int = 4) -> list[Message]:
    """A sample chat whose user turns each carry a fact (``code Q<i>X``), ids as a store's."""
    chat, turn = [], 0
    for message in sample_conversation(turns, seed=seed, tool_every=0):
        if message.role == "user":
            message = replace(message, content=f"Turn {turn} has code Q{turn}X. {message.content}")
            turn += 1
        chat.append(replace(message, id=f"turn-{len(chat)}"))
    return chat


def session_fits(window: WindowPolicy, chat: list[Message],
                 first: int = 0) -> Iterator[tuple[int, Fitted]]:
    """Each user turn from ``first`` on, fitted as a gateway session does: the stored history
    (counted) plus the new message under a fresh id."""
    for k, message in enumerate(chat):
        if message.role == "user" and k >= first:
            tokens = sum(map(COUNTER.count_message, chat[:k]))
            yield k, window.fit([*chat[:k], replace(message, id=new_id())], REPLY,
                                counted=(k, tokens))


def summary_of(fitted: Fitted) -> str | None:
    found = [m.content for m in fitted.messages if (m.content or "").startswith(SUMMARY_PREFIX)]
    return found[0] if found else None


# -- the cache-aware cut ------------------------------------------------------------------------
def test_each_prompt_extends_the_previous_one_until_a_recut() -> None:
    chat = conversation(60)
    window = WindowPolicy(COUNTER, CONTEXT)
    prompts = [fitted.messages for _, fitted in session_fits(window, chat)]
    recuts = 0
    for k, (before, prompt) in enumerate(itertools.pairwise(prompts), start=1):
        assert COUNTER.count_messages(prompt) <= BUDGET
        assert prompt == trim(chat[:2 * k + 2], BUDGET, COUNTER, cache_policy=CachePolicy())
        if prompt[:len(before)] != before:  # a re-cut: the window jumped to a later start
            recuts += 1
            assert prompt[1].role == "user" and prompt[1] in before and prompt[1] != before[1]
    assert recuts == 13  # in 59 turns; newest first shifts on every turn once full (below)
    # The same prompts as caching.replay's cache-aware policy, so the same reuse.
    report = replay(chat, lambda so_far: window.fit(so_far, REPLY).messages, COUNTER, BUDGET)
    expected = replay(chat, trimmer("cache", BUDGET, COUNTER), COUNTER, BUDGET)
    assert report.summary() == expected.summary() and report.cuts == recuts
    assert round(report.reuse, 3) == 0.695


def test_a_restarted_replica_cuts_the_same() -> None:
    chat = conversation(60)
    warm = dict(session_fits(WindowPolicy(COUNTER, CONTEXT), chat))
    cold = dict(session_fits(WindowPolicy(COUNTER, CONTEXT), chat, first=81))
    assert cold and all(cold[k].messages == warm[k].messages for k in cold)


class Counting(CachePolicy):
    """CachePolicy, counting the messages each replay goes through."""

    replayed: list[int] = []  # noqa: RUF012 (the one list, shared by the frozen instances)

    def replay(self, messages: Any, cost: Any, max_tokens: int, fixed: int, *, pinned: int,
               since: Any = None) -> Any:
        self.replayed.append(len(messages) - (pinned if since is None else since.upto))
        return super().replay(messages, cost, max_tokens, fixed, pinned=pinned, since=since)


def test_a_sessions_turn_replays_only_what_it_added() -> None:
    chat, policy = conversation(200), Counting()
    window = WindowPolicy(COUNTER, CONTEXT, cache_policy=policy)
    replayed = []
    for _, fitted in session_fits(window, chat, first=301):
        replayed.append(sum(policy.replayed))
        policy.replayed.clear()
        assert fitted.prompt_tokens <= BUDGET
    # The first turn on 301 stored messages replays them all (but the system prompt); each
    # later one its two new stored messages and the new message.
    assert replayed == [301] + [3] * 49


def test_without_a_cache_policy_the_newest_turns_are_kept() -> None:
    chat = conversation(60)
    window = WindowPolicy(COUNTER, CONTEXT, cache_policy=None)
    differs = 0
    for k, fitted in session_fits(window, chat):
        assert fitted.messages == trim(chat[:k + 1], BUDGET, COUNTER)
        differs += fitted.messages != trim(chat[:k + 1], BUDGET, COUNTER,
                                           cache_policy=CachePolicy())
    assert differs == 38  # of 60 turns: the ones after the first cut
    report = replay(chat, lambda so_far: window.fit(so_far, REPLY).messages, COUNTER, BUDGET)
    newest = replay(chat, trimmer("newest", BUDGET, COUNTER), COUNTER, BUDGET)
    assert report.summary() == newest.summary()
    assert (report.cuts, round(report.reuse, 3)) == (44, 0.202)  # cache-aware: 13, 0.695


# -- the summary policy ---------------------------------------------------------------------------
class Recording(KeyFactsSummarizer):
    """Key facts, recording each call's messages."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def summarize(self, previous: str | None, messages: Any) -> str:
        self.calls.append([m.id for m in messages])
        return super().summarize(previous, messages)


def test_the_summary_changes_only_when_the_cut_moves() -> None:
    chat, summarizer = conversation(60), Recording()
    window = WindowPolicy(COUNTER, CONTEXT, policy="summary", summarizer=summarizer)
    fits = list(session_fits(window, chat))
    moves = 0
    for (_, before), (_, after) in itertools.pairwise(fits):
        assert after.prompt_tokens <= BUDGET
        if summary_of(after) is None:
            continue
        assert "code Q" in summary_of(after)
        if after.messages[:len(before.messages)] == before.messages:
            continue  # appended only: same summary, same window start
        moves += 1
        assert summary_of(after) != summary_of(before)
    assert moves == len(summarizer.calls) == 18
    # Each call summarized only what the cut newly left out, oldest first, none twice.
    covered = [i for call in summarizer.calls for i in call]
    assert covered == [f"turn-{i}" for i in range(1, len(covered) + 1)]
    # A replica that never saw the session writes the same summaries and prompts.
    cold = WindowPolicy(COUNTER, CONTEXT, policy="summary")
    assert [f.messages for _, f in session_fits(cold, chat, first=101)] == [
        f.messages for k, f in fits if k >= 101]


def failing(calls: list[float], delay: float = 0.0) -> Callable[..., str]:
    def summarize(previous: str | None, messages: Any) -> str:
        calls.append(time.monotonic())
        if delay:
            time.sleep(delay)
            return "too late"
        raise RuntimeError("the summary model is down")

    return summarize


@pytest.mark.parametrize("delay", [0.0, 5.0], ids=["error", "timeout"])
def test_a_failing_summarizer_falls_back_to_key_facts(delay: float) -> None:
    chat, calls = conversation(40), []
    window = WindowPolicy(COUNTER, CONTEXT, policy="summary", summary_timeout=0.5,
                          summarizer=FunctionSummarizer(failing(calls, delay)))
    last = max(k for k, m in enumerate(chat) if m.role == "user")
    start = time.monotonic()
    fitted = dict(session_fits(window, chat, first=last))[last]
    assert time.monotonic() - start < 3  # one attempt, then the fallback
    # Exactly the key facts of everything left out, newest kept under the summary's cap.
    cut = int(fitted.messages[2].id.removeprefix("turn-"))  # where the kept turns start
    facts = KeyFactsSummarizer()
    expected = cut_summary(facts.summarize(None, chat[1:cut]), int(BUDGET * 0.25),
                           lambda text: COUNTER.count_message(
                               Message(role="system", content=SUMMARY_PREFIX + text)), facts)
    assert summary_of(fitted) == SUMMARY_PREFIX + expected
    assert expected.startswith("Key facts (verbatim):") and f"Q{cut // 2 - 1}X" in expected
    assert fitted.prompt_tokens <= BUDGET
    dict(session_fits(window, chat, first=last))  # not remembered: the next request asks again
    assert len(calls) == 2


def test_a_model_summary_is_never_written_on_the_event_loop() -> None:
    seen: list[threading.Thread] = []

    def summarize(previous: str | None, messages: Any) -> str:
        seen.append(threading.current_thread())
        return "- a summary"

    window = WindowPolicy(COUNTER, CONTEXT, policy="summary",
                          summarizer=FunctionSummarizer(summarize))
    assert window.may_block and not WindowPolicy(COUNTER, CONTEXT, policy="summary").may_block
    reply = {"choices": [{"message": {"role": "assistant", "content": "ok"},
                          "finish_reason": "stop"}]}
    chat = conversation(40)

    async def answer() -> threading.Thread:
        async def connected() -> bool:
            return False

        async with loopback_upstream(reply) as url:
            backend = UpstreamBackend(url, upstream_model=FAKE_MODEL, window=window)
            request = backend.parse({"model": FAKE_MODEL, "max_tokens": REPLY, "messages": [
                m.to_openai() for m in chat[:-1]]})
            await backend.answer(request, connected)
            await backend.aclose()
        return threading.current_thread()

    loop_thread = asyncio.run(answer())
    assert seen and all(thread is not loop_thread for thread in seen)


# -- a real gateway, its summaries written by the (fake) upstream model -------------------------
def user_turns(first: str, turns: int) -> list[str]:
    return [first] + [f"filler turn {'abcdefghij'[i]} " + "words " * 15 for i in range(turns)]


def jumps(first: str, turns: int, limit: int) -> int:
    """How often the cache-aware cut of the session's history at ``limit`` tokens moves: what
    ``trim`` says for each prefix (independently of the gateway)."""
    history = as_messages([{"role": role, "content": f"{echo}{content}"}
                           for content in user_turns(first, turns)
                           for role, echo in (("user", ""), ("assistant", "echo: "))][:-1])
    starts = {n - len(trim(history[:n], limit, COUNTER, cache_policy=CachePolicy()))
              for n in range(1, len(history) + 1)}
    return len(starts - {0})


def summary_turns(fake: Proc, first: str, turns: int = 10) -> tuple[dict[str, Any], list[Any], str]:
    """A gateway with ``--summarizer upstream``; one session: ``first``, then fillers. The last
    chat request forwarded, every summary request the upstream got, and the gateway's log."""
    start = len(httpx.get(f"{fake.root}/debug").json()["requests"])
    proc = start_gateway(fake.url, "--store", "memory", "--overflow", "summary", "--summarizer",
                         "upstream", "--summary-timeout", "10", "--default-max-tokens", "32",
                         context=256)
    try:
        client = openai.OpenAI(base_url=proc.url, api_key="unused", max_retries=0, timeout=30)
        for content in user_turns(first, turns):
            reply = client.chat.completions.create(
                model=FAKE_MODEL, extra_headers={"X-Session-Id": "trip"},
                messages=[{"role": "user", "content": content}])
            assert reply.choices[0].message.content == f"echo: {content}"
    finally:
        log = proc.stop()
    assert "Traceback" not in log
    sent = httpx.get(f"{fake.root}/debug").json()["requests"][start:]
    summaries = [r for r in sent if r["messages"][0].get("content") == DEFAULT_SYSTEM]
    chats = [r for r in sent if r not in summaries]
    assert len(chats) == turns + 1
    return chats[-1], summaries, log


def test_the_upstream_model_writes_the_summary(fake: Proc) -> None:
    chat, summaries, log = summary_turns(fake, "My booking code is XK42Q; we fly on 14 March.")
    assert chat["messages"][0] == {"role": "system", "content": SUMMARY_PREFIX + FAKE_SUMMARY}
    assert chat["messages"][-1]["content"].startswith("filler turn j")
    assert COUNTER.count_messages(as_messages(chat["messages"])) <= 256 - 32
    # One request per move of the cut, each about what it newly left out, the first with the
    # booking; none asked twice.
    moves = jumps("My booking code is XK42Q; we fly on 14 March.", 10, 256 - 32 - 56)
    assert len(summaries) == moves == 4 and all(r["model"] == FAKE_MODEL for r in summaries)
    prompts = [r["messages"][-1]["content"] for r in summaries]
    assert "XK42Q" in prompts[0] and len(set(prompts)) == moves
    assert "key facts" not in log


def test_a_failed_upstream_summary_falls_back_to_key_facts(fake: Proc) -> None:
    chat, summaries, log = summary_turns(
        fake, "My code is XK42Q; we fly on 14 March. __summary_fail")
    summary = chat["messages"][0]["content"]
    assert summary.startswith(SUMMARY_PREFIX + "Key facts (verbatim):")
    assert "XK42Q" in summary and "14 March" in summary and FAKE_SUMMARY not in summary
    assert summaries and "__summary_fail" in summaries[0]["messages"][-1]["content"]
    assert "this request gets the key facts of what was left out" in log
