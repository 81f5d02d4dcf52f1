"""A process's cached view of a session (``Sessions``), against what the store holds.

Two ``Sessions`` on one SQLite file stand for two gateway replicas. Each turn must start from
the whole acknowledged history, whoever stored it, with its price (counted once per message),
while a process that is the session's only writer reads one message per turn to learn that
nothing came meanwhile.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from contextwindow.messages import Message
from contextwindow.serve.protocol import ReplyTap
from contextwindow.serve.sessions import TAIL_PROBE, Sessions
from contextwindow.stores import SQLiteStore
from contextwindow.tokens import TokenCounter

COUNT = TokenCounter.for_model("gpt-4o").count_message


class Loads(SQLiteStore):
    """A SQLite store that records the ``start`` of every ``load``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.starts: list[int] = []

    def load(self, session: str, start: int = 0) -> list[Message]:
        self.starts.append(start)
        return super().load(session, start)


async def turn(sessions: Sessions, question: str) -> list[tuple[str, Any]]:
    """One turn of session ``s``: the history it starts from (and what it costs, as the fit
    is told), then the question and its reply stored."""
    current = await sessions.begin("s")
    history = current.history
    assert current.counted == (len(history), sum(map(COUNT, history)))
    seen = [(m.role, m.content) for m in history]
    tap = ReplyTap()
    tap.feed_message({"role": "assistant", "content": f"re: {question}"}, "stop")
    assert await current.close([Message(role="user", content=question)], tap)
    return seen


def said(*questions: str) -> list[tuple[str, Any]]:
    return [pair for q in questions for pair in (("user", q), ("assistant", f"re: {q}"))]


def test_each_turn_starts_from_every_acknowledged_turn(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    one, other = Loads(path), Loads(path)
    first, second = Sessions(one, count=COUNT), Sessions(other, count=COUNT)

    async def run() -> None:
        assert await turn(first, "q0") == []
        assert await turn(first, "q1") == said("q0")
        one.starts.clear()
        assert await turn(first, "q2") == said("q0", "q1")
        assert one.starts == [-1]  # the only writer: one message read, nothing re-read
        assert await turn(second, "q3") == said("q0", "q1", "q2")  # a fresh view: all of it
        assert await turn(first, "q4") == said("q0", "q1", "q2", "q3")  # what the other added
        others = [f"p{k}" for k in range(TAIL_PROBE)]  # more than the tail probe holds
        for question in others:
            await turn(second, question)
        one.starts.clear()
        assert await turn(first, "q5") == said("q0", "q1", "q2", "q3", "q4", *others)
        assert one.starts == [-1, -TAIL_PROBE, 9]  # newest, tail, then from its own offset
        await second.delete("s")
        await turn(second, "r0")
        assert await turn(first, "r1") == said("r0")  # deleted meanwhile: read afresh
        for sessions in (first, second):
            sessions.close()

    asyncio.run(run())
