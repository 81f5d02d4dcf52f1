"""``contextwindow chat`` piped: one user turn per line, one reply per turn, a SQLite session.

Uses a tiny random-init Llama with SmolLM2's vocabulary, saved to a directory so the command
loads it like any local model. Expected replies are recomputed with :class:`Generator` on the
view the memory gives, so the test checks what the model was shown, not just that it ran.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from contextwindow.cli import main
from contextwindow.generation import Generator, SamplingParams
from contextwindow.memory import SinkWindowMemory, TokenBufferMemory
from contextwindow.messages import Message
from contextwindow.stores import SQLiteStore
from contextwindow.trim import CachePolicy

CONTEXT = 256
REPLY = 6


@pytest.fixture(scope="module")
def generator(tiny_chat_dir: Path) -> Generator:
    return Generator.load(str(tiny_chat_dir), context=CONTEXT)


def run_chat(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], lines: str,
             *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    monkeypatch.setenv("COLUMNS", "200")
    code = main(["chat", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def chat_args(tiny_chat_dir: Path, db: Path, session: str, *extra: str) -> list[str]:
    return ["--model", str(tiny_chat_dir), "--store", str(db), "--session", session,
            "--temperature", "0", "--reply-tokens", str(REPLY), "--context", str(CONTEXT),
            *extra]


def expected_reply(generator: Generator, view: list[Message]) -> str:
    _, completion = generator.chat(view, SamplingParams(max_tokens=REPLY, temperature=0))
    return completion.text


def test_piped_chat_answers_each_line_and_persists(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        tiny_chat_dir: Path, generator: Generator) -> None:
    db = tmp_path / "chat.sqlite3"
    code, out, err = run_chat(monkeypatch, capsys, "hello there\n\n   \nhow are you?\n",
                              *chat_args(tiny_chat_dir, db, "s1", "--max-tokens", "200",
                                         "--system", "Be brief."))
    assert code == 0, err
    store = SQLiteStore(db)
    history = store.load("s1")
    store.close()
    assert [(m.role, m.content) for m in history[:2]] == [("system", "Be brief."),
                                                          ("user", "hello there")]
    assert [m.role for m in history] == ["system", "user", "assistant", "user", "assistant"]
    first = expected_reply(generator, history[:2])
    second = expected_reply(generator, history[:4])
    assert [history[2].content, history[4].content] == [first, second]
    assert out == f"{first}\n{second}\n"  # stdout carries the replies only
    # The status line reports the memory exactly.
    memory = TokenBufferMemory(200, counter=generator.counter)
    for message in history:
        memory.add_message(message)
    assert (f"tokens {memory.token_count()}/200 · 5 of 5 messages in context · trimmed 0 "
            f"· reply {REPLY} tokens (length)") in err
    assert "session s1" in err


def test_resuming_a_session_continues_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        tiny_chat_dir: Path, generator: Generator) -> None:
    db = tmp_path / "chat.sqlite3"
    args = chat_args(tiny_chat_dir, db, "trip", "--max-tokens", "200")
    assert run_chat(monkeypatch, capsys, "first question\n", *args)[0] == 0
    code, out, err = run_chat(monkeypatch, capsys, "second question\n/quit\nnever sent\n",
                              *args)
    assert code == 0, err
    assert "resumed session trip (2 messages)" in err
    store = SQLiteStore(db)
    history = store.load("trip")
    store.close()
    assert [m.content for m in history if m.role == "user"] == ["first question",
                                                                 "second question"]
    assert len(history) == 4  # "/quit" stopped before "never sent"
    assert out == expected_reply(generator, history[:3]) + "\n"


@pytest.mark.parametrize("memory_kind", ["trim", "sinks"])
def test_a_small_budget_trims_what_the_model_sees(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        tiny_chat_dir: Path, generator: Generator, memory_kind: str) -> None:
    db = tmp_path / "chat.sqlite3"
    turns = ["my name is Ada", "I like trams", "what should I pack", "where is the museum",
             "what is my name"]
    code, out, err = run_chat(monkeypatch, capsys, "\n".join(turns) + "\n",
                              *chat_args(tiny_chat_dir, db, "small", "--max-tokens", "90",
                                         "--overflow", memory_kind))
    assert code == 0, err
    store = SQLiteStore(db)
    history = store.load("small")
    store.close()
    assert [m.content for m in history if m.role == "user"] == turns
    cut = CachePolicy()  # the chat's default (--cache-aware)
    make = (lambda: TokenBufferMemory(90, counter=generator.counter, cache_policy=cut)) \
        if memory_kind == "trim" \
        else (lambda: SinkWindowMemory(90, keep_first=2, counter=generator.counter,
                                       cache_policy=cut))
    # Replay: each reply must be the one generated from that memory's view at that turn.
    memory = make()
    replies = []
    for message in history:
        if message.role == "assistant":
            assert message.content == expected_reply(generator, memory.messages())
            replies.append(message.content)
        memory.add_message(message)
    assert out == "".join(f"{r}\n" for r in replies)
    plan = memory.plan()
    assert plan.dropped > 0 and memory.token_count() <= 90
    kept = len(memory.messages())
    assert (f"tokens {memory.token_count()}/90 · {kept} of {len(history)} messages in context "
            f"· trimmed {len(history) - kept}") in err.splitlines()[-1]
    if memory_kind == "sinks":  # the first exchange is pinned
        assert memory.messages()[:2] == history[:2]


def test_summary_memory_with_key_facts(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        tiny_chat_dir: Path, generator: Generator) -> None:
    from contextwindow.memory import SummaryBufferMemory
    from contextwindow.summarize import KeyFactsSummarizer

    db = tmp_path / "chat.sqlite3"
    turns = [f"fact {k}: flight LX{100 + k} leaves at {k}:30 from Zurich" for k in range(6)]
    code, out, err = run_chat(monkeypatch, capsys, "\n".join(turns) + "\n",
                              *chat_args(tiny_chat_dir, db, "sum", "--max-tokens", "160",
                                         "--overflow", "summary", "--summarizer", "keyfacts"))
    assert code == 0, err
    store = SQLiteStore(db)
    history = store.load("sum")
    summary = store.load_summary("sum")
    store.close()
    assert summary is not None
    folded = [m.content for m in history[summary.start:summary.end] if m.role == "user"]
    newest_code = folded[-1].split("flight ")[1].split()[0]
    assert newest_code in summary.text  # the facts block keeps the newest facts
    memory = SummaryBufferMemory(160, KeyFactsSummarizer(), counter=generator.counter)
    for message in history:
        memory.add_message(message)
    assert memory.summary == summary
    assert f"summarized {summary.end - summary.start}" in err.splitlines()[-1]
    assert out == "".join(f"{m.content}\n" for m in history if m.role == "assistant")


def test_a_turn_larger_than_the_budget_exits_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        tiny_chat_dir: Path) -> None:
    code, out, err = run_chat(monkeypatch, capsys, "word " * 200 + "\n",
                              *chat_args(tiny_chat_dir, tmp_path / "c.db", "big",
                                         "--max-tokens", "50"))
    assert code == 2
    assert out == ""
    assert "budget of 50 tokens is too small" in err


def test_inconsistent_budget_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        tiny_chat_dir: Path) -> None:
    code, _, err = run_chat(monkeypatch, capsys, "hi\n",
                            *chat_args(tiny_chat_dir, tmp_path / "c.db", "x", "--max-tokens", "252",
                                       "--no-sink-cache"))
    assert code == 2
    assert "exceed the model's window of 256 tokens" in err
    code, _, err = run_chat(monkeypatch, capsys, "hi\n",
                            *chat_args(tiny_chat_dir, tmp_path / "c.db", "x", "--overflow",
                                       "window"))
    assert code == 2 and "unknown overflow mode 'window'" in err


def test_recall_memory_quotes_an_old_turn_before_the_question(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        tiny_chat_dir: Path, generator: Generator) -> None:
    from contextwindow.memory import RecallMemory
    from contextwindow.window import RECALL_HEADER

    db = tmp_path / "chat.sqlite3"
    turns = ["my sister Ingrid lives in Trondheim", "I like trams", "what should I pack",
             "where is the museum", "is it raining", "what time is it", "any news today",
             "how far is the station", "can you help me", "where does Ingrid live"]
    code, out, err = run_chat(monkeypatch, capsys, "\n".join(turns) + "\n",
                              *chat_args(tiny_chat_dir, db, "rec", "--max-tokens", "180",
                                         "--overflow", "recall", "--recall-tokens", "80"))
    assert code == 0, err
    store = SQLiteStore(db)
    history = store.load("rec")
    store.close()
    assert [m.content for m in history if m.role == "user"] == turns
    assert all(m.timestamp is not None for m in history)  # each turn knows when it was said
    # Replay: each reply is the one generated from the recall memory's view at that turn.
    memory = RecallMemory(180, recall_tokens=80, counter=generator.counter,
                          cache_policy=CachePolicy())
    for message in history:
        if message.role == "assistant":
            assert message.content == expected_reply(generator, memory.messages())
        memory.add_message(message)
    question = len(history) - 2
    plan = memory.plan()
    assert plan.recalled is not None and plan.recalled_at == question
    assert plan.recall_indices == (0,)  # the first message, quoted with its date
    assert plan.recalled.content.startswith(f"{RECALL_HEADER}\n\n[")  # dated
    assert plan.recalled.content.endswith(f"] user: {turns[0]}")
    assert memory.messages()[-3:] == [plan.recalled, *history[-2:]]
    assert memory.token_count() <= 180
    kept = len(plan.select(history))
    assert (f"tokens {memory.token_count()}/180 · {kept} of {len(history)} messages in "
            f"context · trimmed {plan.dropped} · recalled 1") in err.splitlines()[-1]
    assert out == "".join(f"{m.content}\n" for m in history if m.role == "assistant")


class Terminal(io.StringIO):
    """Typed input on a terminal: ``chat`` goes interactive; a line ``^C`` is Ctrl-C."""

    def isatty(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:
        line = super().readline()
        if line == "^C\n":
            raise KeyboardInterrupt
        return line


def run_terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                 lines: str, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", Terminal(lines))
    monkeypatch.setenv("COLUMNS", "200")
    code = main(["chat", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stored(db: Path, session: str) -> list[tuple[str, str | None]]:
    store = SQLiteStore(db)
    history = store.load(session)
    store.close()
    return [(m.role, m.content) for m in history]


def test_terminal_commands_are_never_sent_and_over_budget_turns_are_not_stored(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        tiny_chat_dir: Path, generator: Generator) -> None:
    db = tmp_path / "chat.sqlite3"
    long = " ".join(["word"] * 200)
    code, out, err = run_terminal(monkeypatch, capsys,
                                  f"/help\n/nope\n{long}\n/usr/bin is a path\n",
                                  *chat_args(tiny_chat_dir, db, "t", "--max-tokens", "100"))
    assert code == 0, err  # end of input
    assert f"(window {CONTEXT} tokens) · overflow trim · budget 100 tokens · /help" in out
    assert "  /status  what the context holds" in out and "  /exit    leave" in out
    assert "unknown command /nope; /help lists the commands (nothing was sent)" in out
    assert "that message does not fit the budget" in out
    # Only the plain line that fits became a turn; commands and the refused message left
    # nothing behind, so the history alternates user / assistant.
    reply = expected_reply(generator, [Message(role="user", content="/usr/bin is a path")])
    assert stored(db, "t") == [("user", "/usr/bin is a path"), ("assistant", reply)]
    assert out.count("assistant> ") == 1


def test_ctrl_c_mid_reply_stores_nothing_of_the_turn_and_exits_130(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        tiny_chat_dir: Path, generator: Generator) -> None:
    db = tmp_path / "chat.sqlite3"
    real = Generator.generate
    calls = []

    def interrupted_second(self: Generator, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Generator, "generate", interrupted_second)
    code, out, err = run_chat(monkeypatch, capsys, "first\nsecond\nthird\n",
                              *chat_args(tiny_chat_dir, db, "c", "--max-tokens", "200"))
    assert code == 130
    assert "interrupted: this turn is not saved" in err
    first = expected_reply(generator, [Message(role="user", content="first")])
    assert stored(db, "c") == [("user", "first"), ("assistant", first)]
    assert out == first + "\n"


def test_ctrl_c_at_the_prompt_exits_130_and_exit_exits_0(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        tiny_chat_dir: Path) -> None:
    db = tmp_path / "chat.sqlite3"
    args = chat_args(tiny_chat_dir, db, "p", "--max-tokens", "200")
    assert run_terminal(monkeypatch, capsys, "^C\nnever sent\n", *args)[0] == 130
    assert run_terminal(monkeypatch, capsys, "/exit\nnever sent\n", *args)[0] == 0
    assert stored(db, "p") == []


def test_old_option_spellings_still_work(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        tiny_chat_dir: Path, generator: Generator) -> None:
    """--db (now --store) and --memory (now --overflow; its ``token`` is now ``trim``)."""
    db = tmp_path / "old.sqlite3"
    args = ["--model", str(tiny_chat_dir), "--db", str(db), "--session", "o", "--memory",
            "token", "--temperature", "0", "--reply-tokens", str(REPLY), "--context",
            str(CONTEXT), "--max-tokens", "200"]
    code, _, err = run_chat(monkeypatch, capsys, "hello\n", *args)
    assert code == 0, err
    assert "overflow trim · budget 200 tokens" in err
    reply = expected_reply(generator, [Message(role="user", content="hello")])
    assert stored(db, "o") == [("user", "hello"), ("assistant", reply)]
    code, _, err = run_chat(monkeypatch, capsys, "hi\n", *args[:4], "--memory", "nope")
    assert code == 2 and "unknown overflow mode 'nope'" in err
