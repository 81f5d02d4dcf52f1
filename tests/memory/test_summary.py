"""Summary memories and summarizers: budget, ranges, units, persistence, atomic failure."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence

import httpx
import openai
import pytest

from contextwindow.errors import BudgetExceededError, ConfigError, StoreError, SummarizerError
from contextwindow.memory import SummaryBufferMemory, SummaryMemory
from contextwindow.messages import Message, Summary, ToolCall
from contextwindow.samples import sample_conversation
from contextwindow.stores import InMemoryStore, SQLiteStore
from contextwindow.summarize import (
    DEFAULT_PROMPT,
    CombinedSummarizer,
    FunctionSummarizer,
    KeyFactsSummarizer,
    OpenAISummarizer,
    Summarizer,
    SummarizerWarning,
    TransformersSummarizer,
    extract_facts,
    render_transcript,
    run_summarizer,
    split_sentences,
)
from contextwindow.tokens import TokenCounter

COUNTER = TokenCounter.for_model("gpt-4o")


class Recorder:
    """A deterministic summarizer: previous text plus one tag per folded message."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, list[Message]]] = []

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        self.calls.append((previous, list(messages)))
        tag = f"<{len(self.calls)}:{len(messages)}>"
        return f"{previous} {tag}" if previous else tag


class Raising:
    def __init__(self) -> None:
        self.calls = 0

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        self.calls += 1
        raise RuntimeError("model server is down")


class Blocking:
    """Blocks until released: a summarizer that never answers in time."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        self.release.wait(30)
        return "too late"


class Switchable(Recorder):
    """Fails while ``broken`` is set, otherwise records like Recorder."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        if self.broken:
            raise RuntimeError("temporarily broken")
        return super().summarize(previous, messages)


def feed(memory, messages):
    for message in messages:
        memory.add_message(message)


def capped_memory(reply: str, max_summary_tokens: int) -> SummaryBufferMemory:
    """A 400-token memory after 20 turns whose summarizer always answers ``reply``: its stored
    summary shows how ``max_summary_tokens`` cuts (or keeps) that reply."""
    memory = SummaryBufferMemory(400, FunctionSummarizer(lambda prev, msgs: reply),
                                 max_summary_tokens=max_summary_tokens, counter=COUNTER)
    feed(memory, sample_conversation(20, seed=1))
    return memory


def sqlite_dump(path) -> tuple[list, list]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT seq, session, id, data FROM messages ORDER BY seq").fetchall()
        summaries = conn.execute("SELECT session, data FROM summaries ORDER BY session").fetchall()
    finally:
        conn.close()
    return rows, summaries


def check_view(memory) -> None:
    """The invariants every summary-memory view must satisfy."""
    view = memory.messages()
    history = memory.history()
    plan = memory.plan()
    summary = memory.summary
    # exact accounting, summary included
    assert memory.token_count() == COUNTER.count_messages(view, memory.tools)
    if memory.max_tokens is not None:
        assert memory.token_count() <= memory.max_tokens
    if summary is None:
        assert view == history[: plan.pinned] + history[plan.start:]
        return
    assert summary.start == plan.pinned
    assert view[plan.pinned].id == f"summary-{summary.start}-{summary.end}"
    assert view[plan.pinned].role == "system"
    assert view == history[: plan.pinned] + [view[plan.pinned]] + history[plan.start:]
    assert plan.start >= summary.end
    assert COUNTER.count_message(view[plan.pinned]) <= memory.max_summary_tokens
    # a summary ends where a unit starts: a user message (never between call and results)
    assert summary.end == len(history) or history[summary.end].role == "user"


# -- SummaryBufferMemory mechanics --------------------------------------------------------------

def test_budget_never_exceeded_and_every_message_folded_once_in_order():
    recorder = Recorder()
    memory = SummaryBufferMemory(600, recorder, max_summary_tokens=150, counter=COUNTER)
    conversation = sample_conversation(60, seed=3)
    for message in conversation:
        memory.add_message(message)
        check_view(memory)
    assert memory.history() == conversation
    summary = memory.summary
    assert summary.start == 1  # after the system prompt
    folded = [m for _, messages in recorder.calls for m in messages]
    assert folded == conversation[1: summary.end]  # each message exactly once, in order
    # progressive: each call gets the previous call's summary
    for k in range(1, len(recorder.calls)):
        assert recorder.calls[k][0] is not None
        assert recorder.calls[k][0].endswith(f"<{k}:{len(recorder.calls[k - 1][1])}>")
    assert memory.summarizations == len(recorder.calls)
    assert not memory.degraded


def test_units_never_split_with_tool_calls():
    recorder = Recorder()
    memory = SummaryBufferMemory(500, recorder, max_summary_tokens=120, counter=COUNTER)
    conversation = sample_conversation(50, seed=5, tool_every=2)
    for message in conversation:
        memory.add_message(message)
        check_view(memory)
    assert len(recorder.calls) >= 3
    for _, messages in recorder.calls:
        assert messages[0].role == "user"
        # every tool call folded here has all its results folded here too
        calls = {c.id for m in messages for c in m.tool_calls}
        results = {m.tool_call_id for m in messages if m.role == "tool"}
        assert calls == results


def test_summarizes_only_when_over_budget_and_folds_to_low_water():
    recorder = Recorder()
    conversation = sample_conversation(40, seed=1)
    big = SummaryBufferMemory(100_000, recorder, counter=COUNTER)
    feed(big, conversation)
    assert recorder.calls == [] and big.summary is None
    assert big.messages() == conversation

    recorder = Recorder()
    memory = SummaryBufferMemory(800, recorder, max_summary_tokens=200, low_water=0.5,
                                 counter=COUNTER)
    trigger_points = []
    for index, message in enumerate(conversation):
        before = memory.summarizations
        full_view = memory.token_count() + COUNTER.count_message(message)
        memory.add_message(message)
        if memory.summarizations > before:
            trigger_points.append(index)
            # it only ran because the un-folded view would have gone over budget
            assert full_view > 800
            # after a fold the view (with the summary at its cap) is at the low-water mark
            assert memory.token_count() - COUNTER.count_message(memory.messages()[1]) \
                + 200 <= 400
        else:  # no fold: the view is simply the previous one plus the message
            assert memory.token_count() == full_view <= 800
    assert len(trigger_points) == memory.summarizations == len(recorder.calls)
    assert 2 <= len(trigger_points) < len(conversation) // 4
    # never on consecutive adds: a fold buys room for several more
    assert all(b - a >= 4 for a, b in itertools.pairwise(trigger_points))


def test_pinned_head_and_keep_first_stay_verbatim():
    recorder = Recorder()
    memory = SummaryBufferMemory(500, recorder, max_summary_tokens=120, keep_first=2,
                                 counter=COUNTER)
    conversation = sample_conversation(40, seed=2)
    feed(memory, conversation)
    view = memory.messages()
    assert view[:3] == conversation[:3]  # system prompt + first user/assistant pair
    assert memory.summary.start == 3
    assert recorder.calls[0][1][0] == conversation[3]
    check_view(memory)


def test_no_system_prompt_and_tools_are_counted_exactly():
    tools = [{"type": "function", "function": {
        "name": "search", "description": "Search the web.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
    recorder = Recorder()
    memory = SummaryBufferMemory(700, recorder, max_summary_tokens=150, counter=COUNTER,
                                 tools=tools)
    conversation = sample_conversation(40, seed=4, system=None)
    for message in conversation:
        memory.add_message(message)
        check_view(memory)  # view starts with the summary (a system message) once folded
    assert memory.summary.start == 0
    assert memory.messages()[0].role == "system"


def test_max_summary_tokens_cut_is_token_exact():
    words = " ".join(f"word{k}" for k in range(400))
    memory = capped_memory(words, max_summary_tokens=60)
    text = memory.summary.text
    assert words.startswith(text) and text and len(text) < len(words)

    def cost(t: str) -> int:
        return COUNTER.count_message(Summary(t, 0, 0).as_message())

    assert cost(text) <= 60
    next_word = words[: words.index(" ", len(text) + 1)]  # one more word
    assert cost(next_word) > 60
    assert COUNTER.count_message(memory.messages()[1]) <= 60


def test_summary_not_cut_when_it_fits():
    assert capped_memory("short summary", max_summary_tokens=60).summary.text == "short summary"


def test_sqlite_reopen_restores_exact_state(tmp_path):
    path = tmp_path / "chat.db"
    conversation = sample_conversation(50, seed=7)
    store = SQLiteStore(path)
    memory = SummaryBufferMemory(600, Recorder(), max_summary_tokens=150, counter=COUNTER,
                                 store=store, session="s1")
    feed(memory, conversation)
    view, tokens, summary = memory.messages(), memory.token_count(), memory.summary
    assert summary is not None
    store.close()

    store = SQLiteStore(path)
    recorder = Recorder()
    reopened = SummaryBufferMemory(600, recorder, max_summary_tokens=150, counter=COUNTER,
                                   store=store, session="s1")
    assert reopened.summary == summary
    assert reopened.messages() == view
    assert [m.id for m in reopened.messages()] == [m.id for m in view]
    assert reopened.token_count() == tokens
    assert reopened.history() == conversation  # raw messages are all still stored
    assert recorder.calls == []  # reopening does not summarize
    # and it carries on from the stored summary
    feed(reopened, sample_conversation(20, seed=8)[1:])
    assert recorder.calls and recorder.calls[0][0] == summary.text
    check_view(reopened)
    store.close()


def test_reopen_with_different_keep_first_is_refused(tmp_path):
    store = SQLiteStore(tmp_path / "chat.db")
    memory = SummaryBufferMemory(500, Recorder(), max_summary_tokens=120, counter=COUNTER,
                                 store=store)
    feed(memory, sample_conversation(40, seed=1))
    with pytest.raises(ConfigError, match="keep_system/keep_first"):
        SummaryBufferMemory(500, Recorder(), max_summary_tokens=120, keep_first=2,
                            counter=COUNTER, store=store)
    store.close()


def test_stored_summary_beyond_history_is_a_store_error():
    store = InMemoryStore()
    store.append("default", Message(role="user", content="hi"))
    store.save_summary("default", Summary("text", 0, 5))
    with pytest.raises(StoreError, match="covers messages"):
        SummaryBufferMemory(500, Recorder(), counter=COUNTER, store=store)


def test_clear_removes_summary_too():
    memory = SummaryBufferMemory(500, Recorder(), max_summary_tokens=120, counter=COUNTER)
    feed(memory, sample_conversation(30, seed=1))
    assert memory.summary is not None
    memory.clear()
    assert memory.summary is None and memory.messages() == [] and len(memory) == 0


# -- atomic failure ---------------------------------------------------------------------------

def _filled(path, summarizer, **options):
    store = SQLiteStore(path)
    memory = SummaryBufferMemory(600, Recorder(), max_summary_tokens=150, counter=COUNTER,
                                 store=store, **options)
    feed(memory, sample_conversation(40, seed=9))
    assert memory.summary is not None  # a summary already exists, so failure must keep it
    memory.summarizer = summarizer
    extra = sample_conversation(40, seed=10)[1:]
    return store, memory, extra


def _next_fold_message(memory, extra):
    """Feed ``extra`` until the next message would fold; return that message."""
    for message in extra:
        if memory._prepare(message) is not None:
            return message
        memory.add_message(message)
    raise AssertionError("no fold triggered")


@pytest.mark.parametrize("kind", ["raises", "times out"])
def test_failing_summarizer_changes_no_stored_byte(tmp_path, kind):
    summarizer = Raising() if kind == "raises" else Blocking()
    options = {"timeout": 0.05} if kind == "times out" else {}
    store, memory, extra = _filled(tmp_path / "chat.db", summarizer, **options)
    try:
        trigger = _next_fold_message(memory, extra)
        before_db = sqlite_dump(tmp_path / "chat.db")
        before = (memory.history(), memory.messages(), memory.summary, memory.token_count())
        with pytest.raises(SummarizerError) as info:
            memory.add_message(trigger)
        assert "unchanged" in str(info.value)
        assert ("timed out after 0.05 s" if kind == "times out" else "model server is down") \
            in str(info.value)
        assert sqlite_dump(tmp_path / "chat.db") == before_db
        assert (memory.history(), memory.messages(), memory.summary,
                memory.token_count()) == before
        assert memory.failures == 1 and memory.last_error is not None
        # a fresh memory on the same file sees the same state
        again = SummaryBufferMemory(600, Recorder(), max_summary_tokens=150, counter=COUNTER,
                                    store=store)
        assert again.messages() == before[1]
        # and once the summarizer works again, the same add succeeds
        memory.summarizer = Recorder()
        memory.timeout = None
        memory.add_message(trigger)
        assert memory.history()[-1] == trigger
        check_view(memory)
    finally:
        if isinstance(summarizer, Blocking):
            summarizer.release.set()
        store.close()


def test_on_error_trim_falls_back_warns_and_recovers():
    summarizer = Switchable()
    memory = SummaryBufferMemory(600, summarizer, max_summary_tokens=150, counter=COUNTER,
                                 on_error="trim")
    conversation = sample_conversation(70, seed=11)
    feed(memory, conversation[:60])
    good_summary = memory.summary
    assert good_summary is not None
    summarizer.broken = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for message in conversation[60:]:
            memory.add_message(message)
            check_view(memory)  # still within budget: trimmed instead
    assert any(issubclass(w.category, SummarizerWarning) for w in caught)
    assert memory.failures >= 1 and "temporarily broken" in str(memory.last_error)
    assert memory.summary == good_summary  # unchanged
    assert memory.history() == conversation[:len(memory.history())]
    assert memory.degraded
    # recovery: the next fold covers the trimmed messages too
    summarizer.broken = False
    calls_before = len(summarizer.calls)
    for message in conversation[len(memory.history()):]:
        memory.add_message(message)
    more = sample_conversation(30, seed=12)[1:]
    for message in more:
        memory.add_message(message)
        if len(summarizer.calls) > calls_before:
            break
    assert summarizer.calls[calls_before][1][0] == memory.history()[good_summary.end]
    assert not memory.degraded
    check_view(memory)


def test_failing_summarizer_with_inmemory_store_keeps_history():
    memory = SummaryBufferMemory(500, Raising(), max_summary_tokens=120, counter=COUNTER)
    conversation = sample_conversation(40, seed=1)
    added = []
    with pytest.raises(SummarizerError):
        for message in conversation:
            memory.add_message(message)
            added.append(message)
    assert memory.history() == added
    assert memory.store.load("default") == added
    assert memory.store.load_summary("default") is None


def test_empty_or_non_string_summary_is_a_failure():
    for bad in ("   ", None, 42):
        memory = SummaryBufferMemory(400, FunctionSummarizer(lambda p, m, bad=bad: bad),
                                     max_summary_tokens=60, counter=COUNTER)
        with pytest.raises(SummarizerError, match="empty summary|not a string"):
            feed(memory, sample_conversation(20, seed=1))
        assert memory.summary is None


def test_budget_too_small_for_newest_turn_raises_on_read():
    memory = SummaryBufferMemory(200, Recorder(), max_summary_tokens=40, counter=COUNTER)
    memory.add("system", "You are helpful.")
    memory.add("user", "word " * 400)
    with pytest.raises(BudgetExceededError):
        memory.messages()


# -- SummaryMemory ------------------------------------------------------------------------------

def test_summary_memory_keeps_summary_plus_newest_turn():
    recorder = Recorder()
    memory = SummaryMemory(recorder, counter=COUNTER)
    conversation = sample_conversation(12, seed=1, tool_every=3)
    feed(memory, conversation)
    users = [i for i, m in enumerate(conversation) if m.role == "user"]
    assert len(recorder.calls) == len(users) - 1  # one fold per new user turn
    assert memory.summary == Summary(memory.summary.text, 1, users[-1])
    view = memory.messages()
    assert view[0] == conversation[0]
    assert view[1].role == "system" and view[1].content.endswith(memory.summary.text)
    assert view[2:] == conversation[users[-1]:]
    folded = [m for _, messages in recorder.calls for m in messages]
    assert folded == conversation[1:users[-1]]
    assert memory.token_count() == COUNTER.count_messages(view)


# -- async --------------------------------------------------------------------------------------

def test_async_add_matches_sync_add():
    conversation = sample_conversation(40, seed=13)

    async def fn(previous, messages):
        await asyncio.sleep(0)
        return f"{previous or ''}+{len(messages)}"

    sync = SummaryBufferMemory(600, FunctionSummarizer(lambda p, m: f"{p or ''}+{len(m)}"),
                               max_summary_tokens=150, counter=COUNTER)
    feed(sync, conversation)
    amem = SummaryBufferMemory(600, FunctionSummarizer(fn), max_summary_tokens=150,
                               counter=COUNTER)

    async def run():
        for message in conversation:
            await amem.aadd_message(message)

    asyncio.run(run())
    assert amem.summary == sync.summary and amem.messages() == sync.messages()
    assert amem.summarizations == sync.summarizations > 0


def test_async_timeout_is_atomic():
    async def slow(previous, messages):
        await asyncio.sleep(10)
        return "late"

    memory = SummaryBufferMemory(400, Recorder(), max_summary_tokens=60, counter=COUNTER,
                                 timeout=0.05)
    conversation = sample_conversation(30, seed=1)
    trigger = _next_fold_message(memory, conversation)
    memory.summarizer = FunctionSummarizer(slow)
    before = (memory.history(), memory.messages(), memory.summary)

    with pytest.raises(SummarizerError, match="timed out after 0.05 s"):
        asyncio.run(memory.aadd_message(trigger))
    assert (memory.history(), memory.messages(), memory.summary) == before


# -- configuration ------------------------------------------------------------------------------

def test_config_errors():
    with pytest.raises(ConfigError, match="smaller than max_tokens"):
        SummaryBufferMemory(100, Recorder(), max_summary_tokens=100, counter=COUNTER)
    with pytest.raises(ConfigError, match="low_water"):
        SummaryBufferMemory(100, Recorder(), low_water=0, counter=COUNTER)
    with pytest.raises(ConfigError, match="on_error"):
        SummaryBufferMemory(100, Recorder(), on_error="ignore", counter=COUNTER)
    with pytest.raises(ConfigError, match="max_summary_tokens must be >="):
        SummaryBufferMemory(100, Recorder(), max_summary_tokens=3, counter=COUNTER)
    with pytest.raises(ConfigError, match="summarize"):
        SummaryBufferMemory(100, object(), counter=COUNTER)
    with pytest.raises(ConfigError, match="timeout"):
        SummaryBufferMemory(100, Recorder(), timeout=0, counter=COUNTER)
    with pytest.raises(ConfigError, match=r"\{lines\}"):
        OpenAISummarizer("m", prompt="no placeholder")
    assert isinstance(Recorder(), Summarizer)


def test_run_summarizer_wraps_errors_and_validates():
    with pytest.raises(SummarizerError, match="Raising failed: RuntimeError: model server"):
        run_summarizer(Raising(), None, [])
    blocking = Blocking()
    try:
        with pytest.raises(SummarizerError, match="timed out"):
            run_summarizer(blocking, None, [], timeout=0.01)
    finally:
        blocking.release.set()
    assert run_summarizer(FunctionSummarizer(lambda p, m: "  ok \n"), None, []) == "ok"


def test_import_is_torch_and_openai_free():
    code = ("import sys, contextwindow.summarize, contextwindow.memory, "
            "contextwindow.evaluate.recall; "
            "print('torch' in sys.modules, 'openai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# -- KeyFacts -----------------------------------------------------------------------------------

def test_extract_facts_kinds():
    text = ("Ingrid Svensson booked TP1234 for $1,250 on March 3rd, 2026 at 10:30 am. "
            "Email ana@example.com or see https://example.org/x. The code is 4817, "
            "the rate 3.5%, she said \"blue harbour\" on 2027-03-14 and 14/03/2027.")
    assert extract_facts(text) == [
        ("name", "Ingrid Svensson"), ("code", "TP1234"), ("number", "$1,250"),
        ("date", "March 3rd, 2026"), ("date", "10:30 am"), ("contact", "ana@example.com"),
        ("contact", "https://example.org/x"), ("number", "4817"), ("number", "3.5%"),
        ("quote", "blue harbour"), ("date", "2027-03-14"), ("date", "14/03/2027")]


def test_extract_facts_names_heuristics():
    # sentence-initial single capitalised words are not names unless known
    assert extract_facts("Please call me. Thanks a lot.") == []
    assert extract_facts("Ingrid is my sister.") == []
    assert extract_facts("Ingrid is my sister.", known_names=frozenset({"Ingrid"})) == [
        ("name", "Ingrid")]
    assert extract_facts("My dentist is Dr. Okafor, not Mr. Ito.") == [
        ("name", "Okafor"), ("name", "Ito")]
    assert extract_facts("We flew to Lisbon on Monday and met Anne-Marie.") == [
        ("name", "Lisbon"), ("date", "Monday"), ("name", "Anne-Marie")]
    # apostrophes are not quotes; "4817" inside a word is not a number
    assert extract_facts("It's my sister's car, model x4817y.") == []
    assert split_sentences("I saw Dr. Okafor. J. Smith called!\nBye") == [
        "I saw Dr. Okafor.", "J. Smith called!", "Bye"]


def test_keyfacts_block_merges_dedupes_and_keeps_order():
    facts = KeyFactsSummarizer()
    first = [Message(role="user", content="Hello there. My sister's name is Ingrid."),
             Message(role="assistant", content="Nice to meet Ingrid. Anything else?"),
             Message(role="user", content="The locker code is 4817.")]
    block = facts.summarize(None, first)
    assert block == ("Key facts (verbatim):\n"
                     "- user: My sister's name is Ingrid.\n"
                     "- user: The locker code is 4817.")
    second = [Message(role="user", content="Ingrid says the flight is on 14 March 2027."),
              Message(role="assistant", content="Booked under reference QX7P2L.")]
    block2 = facts.summarize(block, second)
    assert block2 == (block + "\n- user: Ingrid says the flight is on 14 March 2027.\n"
                      "- assistant: Booked under reference QX7P2L.")
    assert facts.summarize(block2, [Message(role="user", content="Thanks, bye.")]) == block2
    assert facts.previous_lines("Some model text\n\n" + block2)[-1].endswith("QX7P2L.")


def test_keyfacts_tools_and_long_sentences():
    facts = KeyFactsSummarizer(max_sentence_words=8, context_words=2)
    call = ToolCall(id="c1", name="book", arguments=json.dumps({"city": "Porto", "nights": 3}))
    messages = [
        Message(role="assistant", tool_calls=(call,)),
        Message(role="tool", tool_call_id="c1",
                content=json.dumps({"status": "ok", "confirmation": "ZK93QF"})),
        Message(role="user", content="so I think that we should really go with the plan from "
                                     "Tuesday because it was cheaper overall for everyone"),
    ]
    assert facts.summarize(None, messages) == (
        "Key facts (verbatim):\n"
        "- assistant: book: city=\"Porto\"\n"
        "- assistant: book: nights: 3\n"
        "- tool: confirmation: ZK93QF\n"
        "- user: ... plan from Tuesday because it ...")
    assert facts.summarize(None, [Message(role="user", content="hello")]) == \
        "Key facts (verbatim):\n(none)"


def test_keyfacts_memory_keeps_planted_values():
    memory = SummaryBufferMemory(500, KeyFactsSummarizer(), max_summary_tokens=150,
                                 counter=COUNTER)
    memory.add("system", "You are helpful.")
    memory.add("user", "My landlord's name is Casimir and the deposit is 2,400 euros.")
    memory.add("assistant", "Noted.")
    feed(memory, sample_conversation(30, seed=1, system=None))
    view_text = "\n".join(m.content or "" for m in memory.messages())
    assert memory.summary is not None and memory.summary.start == 1
    assert "Casimir" in view_text and "2,400" in view_text
    check_view(memory)


def test_combined_summarizer_splits_previous():
    seen = []

    def model(previous, messages):
        seen.append(previous)
        return f"model summary {len(seen)}"

    combined = CombinedSummarizer(FunctionSummarizer(model), KeyFactsSummarizer())
    first = combined.summarize(None, [Message(role="user", content="The code is 4817.")])
    assert first == ("model summary 1\n\nKey facts (verbatim):\n"
                     "- user: The code is 4817.")
    second = combined.summarize(first, [Message(role="user", content="Meet Aiko at 9:15.")])
    assert seen == [None, "model summary 1"]  # the model sees only its own part
    assert second == ("model summary 2\n\nKey facts (verbatim):\n"
                      "- user: The code is 4817.\n- user: Meet Aiko at 9:15.")
    assert asyncio.run(combined.asummarize(first, [])) == (
        "model summary 3\n\nKey facts (verbatim):\n- user: The code is 4817.")

    def failing(previous, messages):
        raise ValueError("no")

    with pytest.raises(SummarizerError, match="ValueError: no"):
        CombinedSummarizer(FunctionSummarizer(failing)).summarize(None, [])


def summary_cost(text: str) -> int:
    return COUNTER.count_message(Summary(text, 0, 0).as_message())


def code_turns(n: int) -> list[Message]:
    """``n`` user turns, each stating one distinct code, each acknowledged."""
    out = []
    for k in range(n):
        out.append(Message(role="user", content=f"Locker {k} has the code {1000 + k}."))
        out.append(Message(role="assistant", content="Noted."))
    return out


def test_drop_oldest_facts_keeps_the_newest_lines():
    lines = [f"- user: The code of locker {k} is {1000 + k}." for k in range(40)]
    block = "\n".join(["Key facts (verbatim):", *lines])
    facts = KeyFactsSummarizer()
    cap = 120

    def fits(text):
        return summary_cost(text) <= cap

    kept = facts.fit_summary(block, fits)
    assert fits(kept) and kept.startswith("Key facts (verbatim):\n")
    body = kept.split("\n")[1:]
    assert body == lines[-len(body):] and 1 < len(body) < len(lines)  # a suffix: the newest
    assert not fits("\n".join(["Key facts (verbatim):", *lines[-len(body) - 1:]]))
    assert facts.fit_summary(block, lambda text: True) == block  # fits: unchanged
    # Combined: the model's summary stays, the block loses its oldest lines
    combined = CombinedSummarizer(FunctionSummarizer(lambda prev, msgs: "x"), facts)
    kept = combined.fit_summary("The user is moving flat.\n\n" + block, fits)
    assert fits(kept) and kept.startswith("The user is moving flat.\n\nKey facts (verbatim):\n")
    assert kept.endswith(lines[-1]) and lines[0] not in kept
    # not even one line fits beside the model's summary: the block goes, the summary stays
    assert combined.fit_summary("The user is moving flat.\n\n" + block,
                                lambda text: "Key facts" not in text) == "The user is moving flat."


@pytest.mark.parametrize("combined", [False, True])
def test_keyfacts_memory_drops_oldest_facts_when_full(combined):
    facts = KeyFactsSummarizer()
    summarizer = (CombinedSummarizer(FunctionSummarizer(lambda prev, msgs: "Lockers and codes."),
                                     facts) if combined else facts)
    memory = SummaryBufferMemory(300, summarizer, max_summary_tokens=80, counter=COUNTER)
    turns = code_turns(60)
    for message in turns:
        memory.add_message(message)
        if memory.summary is not None:  # the cap holds after every fold, token-exact
            assert summary_cost(memory.summary.text) <= 80
            check_view(memory)
    summary = memory.summary
    assert summary is not None and memory.summarizations > 3
    # what the view shows is exactly the stored summary
    view = memory.messages()[memory.plan().pinned]
    assert view.content == Summary(summary.text, 0, 0).as_message().content
    folded = [m.content for m in turns[: summary.end] if m.role == "user"]
    codes = [str(1000 + k) for k in range(len(folded))]
    kept = [code for code in codes if code in summary.text]
    assert 2 < len(kept) < len(codes)
    assert kept == codes[-len(kept):]  # the newest folded facts survive, the oldest went
    assert (summary.text.startswith("Lockers and codes.\n\nKey facts (verbatim):\n")
            if combined else summary.text.startswith("Key facts (verbatim):\n"))


# -- OpenAI-compatible endpoint -----------------------------------------------------------------

def _reply(content):
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def test_openai_summarizer_request_and_reply():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=_reply("Summary: Ingrid's code is 4817."))

    client = openai.OpenAI(base_url="http://fake.local/v1", api_key="sk-test",
                           http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    summarizer = OpenAISummarizer("tiny-model", client=client, max_tokens=77)
    messages = [Message(role="user", content="My sister is Ingrid."),
                Message(role="assistant", tool_calls=(ToolCall("c1", "lookup", '{"q": 1}'),)),
                Message(role="tool", tool_call_id="c1", content="code 4817")]
    assert summarizer.summarize("Earlier: a trip.", messages) == "Ingrid's code is 4817."
    (request,) = seen
    assert request.method == "POST" and str(request.url) == "http://fake.local/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    body = json.loads(request.content)
    expected_prompt = (DEFAULT_PROMPT.replace("{previous}", "Earlier: a trip.")
                       .replace("{lines}", "User: My sister is Ingrid.\n"
                                           "Assistant called lookup({\"q\": 1})\n"
                                           "Tool result: code 4817"))
    assert body == {"model": "tiny-model", "max_tokens": 77, "temperature": 0.0,
                    "messages": [{"role": "system", "content": summarizer.system},
                                 {"role": "user", "content": expected_prompt}]}
    assert render_transcript(messages)[1] == 'Assistant called lookup({"q": 1})'


def test_openai_summarizer_custom_prompt_and_base_url_without_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=_reply("ok"))

    summarizer = OpenAISummarizer("m", base_url="http://fake.local/v1",
                                  prompt="P={previous} L={lines}", max_tokens=5, system=None)
    # the client is built lazily from base_url; swap its transport before first use
    summarizer._client = openai.OpenAI(
        **summarizer._client_options(),
        http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    assert summarizer.summarize(None, [Message(role="user", content="hi")]) == "ok"
    body = json.loads(seen[0].content)
    assert body["messages"] == [{"role": "user", "content": "P=(none) L=User: hi"}]
    assert seen[0].headers["authorization"] == "Bearer not-needed"


@pytest.mark.parametrize("status,payload,match", [
    (500, {"error": {"message": "boom"}}, "summary request to 'm' failed"),
    (200, _reply(None), "empty summary"),
    (200, _reply("   "), "empty summary"),
])
def test_openai_summarizer_failures(status, payload, match):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=payload)

    client = openai.OpenAI(base_url="http://fake.local/v1", api_key="k", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(SummarizerError, match=match):
        OpenAISummarizer("m", client=client).summarize(None, [Message(role="user", content="x")])


def test_openai_summarizer_async_client():
    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return httpx.Response(200, json=_reply(f"async {body['max_tokens']}"))

    async_client = openai.AsyncOpenAI(
        base_url="http://fake.local/v1", api_key="k",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    summarizer = OpenAISummarizer("m", max_tokens=9, async_client=async_client)
    memory = SummaryBufferMemory(400, summarizer, max_summary_tokens=60, counter=COUNTER)

    async def run():
        for message in sample_conversation(20, seed=1):
            await memory.aadd_message(message)

    asyncio.run(run())
    assert memory.summary.text == "async 9"
    check_view(memory)


# -- the real local model -----------------------------------------------------------------------

@pytest.mark.slow
def test_transformers_summarizer_smoke(smollm2):
    model, tokenizer = smollm2
    counter = TokenCounter.from_hf(tokenizer)
    summarizer = TransformersSummarizer(model, tokenizer, max_new_tokens=16)
    memory = SummaryBufferMemory(300, summarizer, max_summary_tokens=60, counter=counter)
    conversation = [Message(role="system", content="You are helpful.")]
    for k in range(8):
        conversation.append(Message(role="user", content=f"Item {k}: my locker code is 48{k}7 "
                                                         "and I need it for the gym tomorrow."))
        conversation.append(Message(role="assistant", content="Noted, I will remember it."))
    for message in conversation:
        memory.add_message(message)
        assert memory.token_count() <= 300
    assert memory.summarizations == 1
    text = memory.summary.text
    assert text.strip()
    assert len(tokenizer.encode(text, add_special_tokens=False)) <= 16 + 2
    assert counter.count_message(memory.messages()[1]) <= 60
    assert memory.token_count() == counter.count_messages(memory.messages())


# -- TransformersSummarizer mechanics (fake model and tokenizer: no weights) ----------------------

class FakeTokenizer:
    """One token per whitespace-separated word; remembers every chat it templated."""

    pad_token_id = 0
    eos_token_id = 0
    name_or_path = "fake"

    def __init__(self) -> None:
        self.generated: list[list[dict]] = []

    def apply_chat_template(self, chat, tokenize=True, add_generation_prompt=False,
                            return_dict=False, return_tensors=None):
        import torch

        n = sum(len(m["content"].split()) + 2 for m in chat) + (2 if add_generation_prompt else 0)
        if return_dict:
            self.generated.append(chat)
            return {"input_ids": torch.zeros(1, n, dtype=torch.long),
                    "attention_mask": torch.ones(1, n, dtype=torch.long)}
        return list(range(n))

    def encode(self, text, add_special_tokens=False):
        return text.split()

    def decode(self, ids, skip_special_tokens=False):
        if isinstance(ids, list):
            return " ".join(ids)
        return (
            f"Summary: notes v{len(self.generated)} v{len(self.generated)} v{len(self.generated)}"
        )


class FakeModel:
    device = "cpu"

    def __init__(self) -> None:
        self.options: list[dict] = []

    def generate(self, input_ids, attention_mask, **options):
        import torch

        self.options.append(options)
        return torch.cat([input_ids, torch.ones(1, 3, dtype=torch.long)], dim=1)


def test_transformers_summarizer_greedy_bounded_and_chunked():
    model, tokenizer = FakeModel(), FakeTokenizer()
    summarizer = TransformersSummarizer(model, tokenizer, max_new_tokens=7,
                                        max_input_tokens=120, max_time=5.0)
    messages = [Message(role="user", content=f"line {k} " + "word " * 20) for k in range(8)]
    result = summarizer.summarize("old notes", messages)
    # 8 lines of ~24 tokens do not fit in one 120-token prompt: several progressive calls
    chats = tokenizer.generated
    assert len(chats) > 1 and result == f"notes v{len(chats)}"  # label and stutter cleaned
    assert chats[0][0] == {"role": "system", "content": "You are a careful note-taker."}
    assert chats[0][1]["content"].startswith(
        "Previous notes: old notes\n\nNew messages:\nUser: line 0"
    )
    assert chats[1][1]["content"].startswith("Previous notes: notes v1\n")  # progressive
    shown = [line for chat in chats for line in chat[1]["content"].splitlines()
             if line.startswith("User: ")]
    assert shown == render_transcript(messages)  # every line once, in order
    for options in model.options:
        assert options["do_sample"] is False and options["max_new_tokens"] == 7
        assert options["max_time"] == 5.0 and options["pad_token_id"] == 0


def test_transformers_summarizer_is_lazy_and_validates():
    summarizer = TransformersSummarizer(max_new_tokens=8)  # nothing loaded yet
    assert summarizer._model is None
    with pytest.raises(ConfigError, match="both"):
        TransformersSummarizer(FakeModel())
    with pytest.raises(ConfigError, match="max_new_tokens"):
        TransformersSummarizer(max_new_tokens=0)


def test_clean_summary():
    from contextwindow.summarize import clean_summary

    assert clean_summary("Here are the notes:\n* a: 1\n\n* User: User: User: b\n3.") == \
        "* a: 1\n* User: b"
    assert clean_summary("Updated summary: The code is 4817. The code is 4817. Done.") == \
        "The code is 4817. Done."
    assert clean_summary("keep 10 10 as is") == "keep 10 10 as is"


def test_max_summary_tokens_cut_ends_at_a_line():
    lines = "\n".join(f"- user: fact number {k} is {1000 + k}." for k in range(100))
    text = capped_memory(lines, max_summary_tokens=80).summary.text
    kept = text.split("\n")
    assert kept == lines.split("\n")[: len(kept)]  # whole lines only
    assert COUNTER.count_message(Summary(text, 0, 0).as_message()) <= 80
    one_more = "\n".join(lines.split("\n")[: len(kept) + 1])
    assert COUNTER.count_message(Summary(one_more, 0, 0).as_message()) > 80
