"""Strict input: any conversation is trimmed into one a provider accepts, or refused by name."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextwindow import BudgetExceededError, InvalidMessageError, TokenBufferMemory, trim
from contextwindow.messages import Message, Pending, ToolCall, check_conversation, check_next
from contextwindow.tokens import TokenCounter

COUNTER = TokenCounter.approximate()
USER = {"role": "user", "content": "hi"}


def call(*ids: str) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in ids]}


def result(call_id: str) -> dict:
    return {"role": "tool", "tool_call_id": call_id, "content": "r"}


BROKEN = [
    ([USER, result("nope")], r"message 1: tool result for call 'nope'"),
    ([USER, call("a", "b"), result("a"), USER], r"message 1: tool call\(s\) \['b'\] still need"),
    ([USER, call("a"), result("a"), {"role": "assistant", "content": "ok"}, result("a")],
     r"message 4: tool result for call 'a'"),
    ([USER, {"role": "function", "name": "f", "content": "x"}], r"message 1: function result 'f'"),
]


@pytest.mark.parametrize(("conversation", "error"), BROKEN)
def test_trim_memory_and_cli_refuse_broken_pairing(conversation, error, tmp_path) -> None:
    with pytest.raises(InvalidMessageError, match=error):
        trim(conversation, 1000, COUNTER)
    memory = TokenBufferMemory(1000, counter=COUNTER)
    with pytest.raises(InvalidMessageError, match=error):
        for message in conversation:
            memory.add_message(message)
    for command in ("count", "trim"):
        cli = subprocess.run([sys.executable, "-m", "contextwindow", command], check=False,
                             input=json.dumps(conversation), capture_output=True, text=True,
                             timeout=120)
        assert cli.returncode == 2 and "Traceback" not in cli.stderr
        assert error.replace("\\", "") in " ".join(cli.stderr.split())


def test_a_broken_stretch_the_budget_drops_does_not_matter() -> None:
    conversation = [USER, result("orphan"), {"role": "assistant", "content": "x" * 400}, USER]
    assert trim(conversation, 30, COUNTER) == [USER]


def test_calls_still_pending_at_the_end_are_allowed() -> None:
    conversation = [USER, call("a")]
    assert trim(conversation, 1000, COUNTER) == conversation


# -- the property -------------------------------------------------------------------------------
def provider_accepts(messages: list[Message]) -> bool:
    """An independent statement of the rule: each tool result answers a call of the nearest
    assistant message before it, with only results in between, once; each call is answered
    before the next message that is not a result (or the conversation ends)."""
    owed: set[str] = set()
    answered: set[str] = set()
    for message in messages:
        if message.role == "tool":
            if message.tool_call_id not in owed or message.tool_call_id in answered:
                return False
            answered.add(message.tool_call_id)
            continue
        if owed - answered:
            return False
        owed, answered = {c.id for c in message.tool_calls}, set()
    return True


@st.composite
def anything(draw) -> list[Message]:
    """Messages in any order: tool results may answer nothing, calls may go unanswered."""
    ids = st.sampled_from(["a", "b", "c"])
    text = st.text(alphabet="xy ", max_size=40)
    out: list[Message] = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["system", "user", "assistant", "calls", "tool"]))
        if kind == "calls":
            chosen = draw(st.lists(ids, min_size=1, max_size=3, unique=True))
            out.append(Message(role="assistant",
                               tool_calls=tuple(ToolCall(i, "f", "{}") for i in chosen)))
        elif kind == "tool":
            out.append(Message(role="tool", tool_call_id=draw(ids), content=draw(text)))
        else:
            out.append(Message(role=kind, content=draw(text)))
    return out


@settings(max_examples=400, deadline=None, derandomize=True)
@given(anything(), st.integers(1, 200), st.integers(0, 2))
def test_any_input_is_trimmed_valid_or_refused(messages, budget, keep_first) -> None:
    try:
        kept = trim(messages, budget, COUNTER, keep_first=keep_first)
    except BudgetExceededError:
        return
    except InvalidMessageError:
        assert not provider_accepts(messages)  # only broken input is refused
        return
    assert provider_accepts(kept)
    assert COUNTER.count_messages(kept) <= budget


@st.composite
def with_legacy_calls(draw) -> list[Message]:
    """:func:`anything`, plus legacy ``function_call`` assistants and ``function`` results."""
    out = draw(anything())
    for _ in range(draw(st.integers(0, 3))):
        legacy = draw(st.sampled_from([
            Message(role="assistant", content=None,
                    extra={"function_call": {"name": "f", "arguments": "{}"}}),
            Message(role="function", name=draw(st.sampled_from(["f", "g"])), content="r")]))
        out.insert(draw(st.integers(0, len(out))), legacy)
    return out


@settings(max_examples=400, deadline=None, derandomize=True)
@given(with_legacy_calls())
def test_the_pairing_check_is_the_fold_of_check_next(messages) -> None:
    """check_conversation skips the messages that owe and ask nothing: it accepts and refuses
    exactly what folding check_next over every message does, with the same error."""
    def folded() -> None:
        pending = Pending()
        for k, message in enumerate(messages):
            pending = check_next(pending, message, k)

    outcomes = []
    for check in (folded, lambda: check_conversation(messages)):
        try:
            check()
            outcomes.append(None)
        except InvalidMessageError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
