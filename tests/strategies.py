"""The Hypothesis strategy for random conversations that the trimming tests share.

Each conversation may open with a system prompt; each turn is a user message, then perhaps an
assistant tool-call message with its tool results (ids unique per conversation), then perhaps an
assistant reply. The callers choose the sizes.
"""

from __future__ import annotations

from hypothesis import strategies as st

from contextwindow.messages import Message, ToolCall


@st.composite
def conversations(draw: st.DrawFn, max_turns: int, max_chars: int,
                  max_calls: int) -> list[Message]:
    text = st.text(alphabet="abcdefgh ", min_size=0, max_size=max_chars)
    out: list[Message] = []
    if draw(st.booleans()):
        out.append(Message(role="system", content=draw(text)))
    for turn in range(draw(st.integers(0, max_turns))):
        out.append(Message(role="user", content=draw(text)))
        calls = draw(st.integers(0, max_calls))
        if calls:
            ids = [f"c{turn}_{k}" for k in range(calls)]
            out.append(Message(role="assistant",
                               tool_calls=tuple(ToolCall(i, "f", "{}") for i in ids)))
            out.extend(Message(role="tool", tool_call_id=i, content=draw(text)) for i in ids)
        if draw(st.booleans()):
            out.append(Message(role="assistant", content=draw(text)))
    return out
