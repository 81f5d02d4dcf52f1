"""The README's quick starts run as written: a renamed function or argument fails here first.

The app-developer snippet runs with stub inputs (a conversation, tools, a fake OpenAI client)
and its command lines run through the installed ``contextwindow`` script. The ML snippet needs
the real model and a long generation, so its calls are checked against the signatures instead.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from examples import WEATHER_MESSAGES, WEATHER_TOOLS

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent


def section_blocks(title: str, language: str) -> list[str]:
    """The fenced ``language`` blocks of the README section headed ``## title``."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"README has no section {title!r}"
    return re.findall(rf"^```{language}\n(.*?)^```", match.group(1), re.MULTILINE | re.DOTALL)


class FakeCompletions:
    """``client.chat.completions`` that records each ``create`` call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def create(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}


class FakeClient:
    def __init__(self) -> None:
        self.chat = type("Chat", (), {})()
        self.chat.completions = FakeCompletions()


def run_recording_values(source: str, namespace: dict[str, Any]) -> list[Any]:
    """Execute ``source``; return the value of each top-level expression statement, in order
    (what the REPL would echo), so the snippet's results can be checked."""
    tree = ast.parse(source)
    values: list[Any] = []
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.Expr):
            call = ast.parse("__values__.append(None)").body[0]
            call.value.args[0] = node.value  # type: ignore[attr-defined]
            tree.body[index] = ast.copy_location(call, node)
    ast.fix_missing_locations(tree)
    namespace["__values__"] = values
    exec(compile(tree, str(README), "exec"), namespace)  # noqa: S102 (the README, on purpose)
    return values


def test_app_quick_start_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (snippet,) = section_blocks("Quick start (app developers)", "python")
    monkeypatch.chdir(tmp_path)  # the snippet writes chats.db in the working directory
    messages = [dict(m) for m in WEATHER_MESSAGES]
    client = FakeClient()
    namespace: dict[str, Any] = {"messages": messages, "tools": WEATHER_TOOLS, "client": client}
    values = run_recording_values(snippet, namespace)

    assert values[0] == 101  # counter.count_messages(messages, tools=tools): the API's figure
    kept = namespace["kept"]
    assert kept == messages and all(a is b for a, b in zip(kept, messages))  # both fit in 4000
    sent = [{"role": "user", "content": "Hi, I'm Ingrid."},
            {"role": "assistant", "content": "Hello Ingrid!"}]
    assert client.chat.completions.calls == [{"model": "gpt-4o", "messages": sent}]

    # every add was durable: the same session reopens with both messages
    from contextwindow import SQLiteStore, TokenBufferMemory

    store = SQLiteStore(tmp_path / "chats.db")
    try:
        reopened = TokenBufferMemory(4000, keep_first=2, counter=namespace["counter"],
                                     store=store, session="user-42")
        assert reopened.to_openai() == sent
    finally:
        store.close()


def test_app_quick_start_command_lines_run(tmp_path: Path) -> None:
    (commands,) = section_blocks("Quick start (app developers)", "bash")
    lines = [line for line in commands.splitlines() if line.strip()]
    assert [line.split()[:2] for line in lines] == [
        ["contextwindow", "count"], ["contextwindow", "count"], ["contextwindow", "trim"]]
    conversation = {"messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}
    (tmp_path / "conversation.json").write_text(json.dumps(conversation))
    (tmp_path / "notes.txt").write_text("tiktoken is great!")  # 6 cl100k_base tokens
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    outputs = []
    for line in lines:
        result = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode == 0, f"{line}\n{result.stderr}"
        outputs.append(result)

    assert outputs[0].stdout.strip() == "105"  # gpt-4 framing, tools included
    assert outputs[1].stdout.strip() == "6"
    assert "kept 2 of 2 messages, 101 of 4000 tokens" in " ".join(outputs[2].stderr.split())
    # the request comes back with only the kept messages (here all of them), tools unchanged
    assert json.loads((tmp_path / "kept.json").read_text()) == conversation


def test_ml_quick_start_names_and_arguments_exist() -> None:
    """Every name the ML snippet imports exists, and every call to one of them binds to its
    signature (so a renamed keyword such as ``length=`` or ``window=`` fails here)."""
    (snippet,) = section_blocks("Quick start (ML engineers)", "python")
    tree = ast.parse(snippet)
    imported: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = __import__(node.module, fromlist=["_"])
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                imported[alias.asname or alias.name] = getattr(module, alias.name)
    assert {"load_model", "SinkCache", "scale_rope", "perplexity_by_position"} <= set(imported)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id in imported]
    called = {call.func.id for call in calls}  # type: ignore[attr-defined]
    assert {"SinkCache", "scale_rope", "perplexity_by_position"} <= called
    for call in calls:
        target = imported[call.func.id]  # type: ignore[attr-defined]
        args = [object() for _ in call.args]
        kwargs = {kw.arg: object() for kw in call.keywords if kw.arg is not None}
        inspect.signature(target).bind(*args, **kwargs)  # TypeError if the README is stale
