"""What a model summarizer is asked and how its answer is tidied: prompts, transcripts,
clean-up. Plain text, shared by the local and the OpenAI-compatible backends."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import ConfigError
from ..messages import Message

__all__ = ["DEFAULT_PROMPT", "DEFAULT_SYSTEM", "check_prompt", "clean_summary", "render_prompt",
           "render_transcript"]

DEFAULT_SYSTEM = "You are a careful note-taker."

#: The default instruction. ``{previous}`` is replaced by the running summary (or "(none)"),
#: ``{lines}`` by the transcript of the messages being folded. Pass your own to a summarizer's
#: ``prompt=``; it must contain ``{lines}``. Written for small local models too: a bullet-list
#: "notes" task after the material works better for them than a free-form summary.
DEFAULT_PROMPT = (
    "Previous notes: {previous}\n\n"
    "New messages:\n{lines}\n\n"
    "Write the important facts from the previous notes and the new messages as a bullet list. "
    "Copy every name, number, date, amount, code, decision and open task exactly as written."
)



def _speaker(message: Message) -> str:
    role = {"user": "User", "assistant": "Assistant", "tool": "Tool result",
            "system": "System", "developer": "Developer"}[message.role]
    return f"{role} ({message.name})" if message.name else role


def render_transcript(messages: Sequence[Message]) -> list[str]:
    """One line per message (one per tool call), as the summarizers' prompts show them."""
    lines = []
    for message in messages:
        if message.content:
            lines.append(f"{_speaker(message)}: {' '.join(message.content.split())}")
        for call in message.tool_calls:
            lines.append(f"{_speaker(message)} called {call.name}({call.arguments})")
    return lines


def render_prompt(prompt: str, previous: str | None, lines: Sequence[str]) -> str:
    """Fill ``{previous}`` and ``{lines}`` (plain replacement: braces in the chat are safe)."""
    return (prompt.replace("{previous}", previous.strip() if previous else "(none)")
            .replace("{lines}", "\n".join(lines)))


def check_prompt(prompt: str | None) -> str:
    prompt = DEFAULT_PROMPT if prompt is None else prompt
    if not isinstance(prompt, str) or "{lines}" not in prompt:
        raise ConfigError("a summarizer prompt must be a string containing {lines} "
                          "(and usually {previous})")
    return prompt


_LABEL = re.compile(r"^\s*(?:\*\*)?(?:updated |new |running )?(?:summary|notes)(?:\*\*)?\s*:\s*",
                    re.IGNORECASE)
# A first line that only announces what follows ("Here are the notes:", "The following...:").
_PREAMBLE = re.compile(r"^\s*(?:here (?:is|are)|sure|okay|certainly|the following)\b[^\n]*:\s*\n",
                       re.IGNORECASE)
# A phrase of up to six words said three or more times in a row ("User: User: User:") is kept
# once: the loop a small model falls into under greedy decoding.
_STUTTER = re.compile(r"(?<!\S)(\S+(?:[ \t]+\S+){0,5}?)(?:[ \t]+\1(?=\s|$)){2,}")
_EMPTY_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])?\s*$|^\s*\*\*[^*]+:?\*\*:?\s*$")


def clean_summary(text: str) -> str:
    """Strip a leading "Here are the notes:" or "Summary:" label, heading-only and empty
    bullet lines, and sentences a small model repeats verbatim."""
    text = _LABEL.sub("", _PREAMBLE.sub("", text.strip() + "\n", count=1).strip())
    text = _STUTTER.sub(r"\1", text)
    text = "\n".join(line for line in text.splitlines() if not _EMPTY_LINE.match(line))
    seen: set[str] = set()
    out_lines: list[str] = []
    for line in text.splitlines():
        kept = []
        for sentence in re.split(r"(?<=[.!?])\s+", line.strip()):
            key = " ".join(sentence.lower().split())
            if key and key in seen:
                continue
            seen.add(key)
            kept.append(sentence)
        joined = " ".join(s for s in kept if s)
        if joined or (out_lines and out_lines[-1]):
            out_lines.append(joined)
    return "\n".join(out_lines).strip()

