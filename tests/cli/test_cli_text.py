"""The text-side CLI: exact output, JSON in and out, clear errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_tokens import CORPORATE_JARGON

from contextwindow.cli import main
from contextwindow.samples import sample_conversation
from contextwindow.tokens import TokenCounter


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_count_conversation_and_text(tmp_path, capsys) -> None:
    conversation = tmp_path / "c.json"
    conversation.write_text(json.dumps(CORPORATE_JARGON))
    assert run(capsys, "count", str(conversation), "--model", "gpt-4")[:2] == (0, "129\n")
    assert run(capsys, "count", str(conversation))[:2] == (0, "124\n")  # default gpt-4o
    text = tmp_path / "t.txt"
    text.write_text("tiktoken is great!")
    assert run(capsys, "count", str(text), "--encoding", "cl100k_base")[:2] == (0, "6\n")


def test_trim_outputs_budgeted_json(tmp_path, capsys) -> None:
    conversation = [m.to_openai() for m in sample_conversation(50, seed=1)]
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"messages": conversation}))
    code, out, err = run(capsys, "trim", str(path), "--max-tokens", "500", "--keep-first", "1")
    assert code == 0
    kept = json.loads(out)["messages"]  # an object in, the same object out
    counter = TokenCounter.for_model("gpt-4o")
    assert counter.count_messages(kept) <= 500
    assert kept[:2] == conversation[:2] and kept[-1] == conversation[-1]
    assert f"kept {len(kept)} of {len(conversation)} messages" in err


@pytest.mark.parametrize(("stdin", "argv", "message"), [
    ('[{"role": "wizard", "content": "x"}]', ["count"], "message 0: unknown role 'wizard'"),
    ('[{"role": "user"', ["trim"], "invalid JSON at line 1"),
    ('{"messages": 3}', ["trim"], "expected a JSON list of messages"),
    ("[]", ["count", "--model", "llama"], "no tiktoken encoding is known for model 'llama'"),
    ("[]", ["count", "missing.json"], "no such file: missing.json"),
    ('[{"role": "system", "content": "' + "x" * 400 + '"}]', ["trim", "-n", "10"], "too small"),
])
def test_bad_input_gives_one_clear_line_and_exit_2(stdin, argv, message) -> None:
    result = subprocess.run([sys.executable, "-m", "contextwindow", *argv], input=stdin,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_trim_keeps_tools_ids_and_content_parts_and_count_prices_tools(tmp_path, capsys) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Find a word.",
                                               "parameters": {"type": "object", "properties": {
                                                   "word": {"type": "string"}}}}}]
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    messages = [{"role": "system", "content": "terse", "id": "s"},
                *({"role": "user", "content": f"old {k} " * 50, "id": f"u{k}"} for k in range(5)),
                {"role": "user", "content": parts, "id": "last"}]
    request = {"model": "gpt-4o", "messages": messages, "tools": tools}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(request))
    code, out, _ = run(capsys, "trim", str(path), "--max-tokens", "150")
    assert code == 0
    assert json.loads(out) == {**request, "messages": [messages[0], messages[-1]]}
    counter = TokenCounter.for_model("gpt-4o")
    code, out, _ = run(capsys, "count", str(path))
    assert (code, int(out)) == (0, counter.count_messages(messages, tools=tools))
    assert counter.count_tools(tools) > 0
