"""An instant OpenAI-compatible upstream for the gateway tests, and the processes they start.

Run as ``python tests/serve/test_gateway_fake.py PORT``, this file is a tiny FastAPI server that
answers at once: the reply is ``echo: <last message>`` (streamed word by word with
``stream: true``). The last message can steer it: ``__slow:S`` answers after S seconds (and
counts a cancellation if the client leaves first), ``__status:N`` answers HTTP N with an
OpenAI-shaped error and ``Retry-After: 7``, ``__drip:S`` streams one word every S seconds;
a stream of ``__cut`` ends with ``[DONE]`` and of ``__eof`` with the end of the body, both
before any ``finish_reason`` (as llama.cpp's server does when another request interrupts
it), and ``__nousage`` never sends a usage chunk (as llama.cpp ignores ``include_usage``).
A summary request (the system prompt of the summarizers, ``DEFAULT_SYSTEM``) is answered with
``FAKE_SUMMARY``, or 500 when its prompt contains ``__summary_fail``. ``GET /debug`` returns
every request's messages and the cancellations, so tests can check what the gateway really
sent.

The helpers start real processes on 127.0.0.1 (this fake, ``contextwindow serve`` gateways) and
stop them at the end; the tests in this file check the fake itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from contextwindow.summarize import DEFAULT_SYSTEM

ROOT = Path(__file__).resolve().parents[2]
FAKE_MODEL = "gpt-4o-mini"  # a name tiktoken knows: the gateway counts it exactly (o200k_base)
CLI = [sys.executable, "-c", "from contextwindow.cli import entry_point; entry_point()"]
FAKE_SUMMARY = "- The traveller's plans so far, as the upstream model summarized them."


def is_summary_request(body: dict[str, Any]) -> bool:
    """A summarizer's request (``OpenAISummarizer``), not a chat turn."""
    first = (body.get("messages") or [{}])[0]
    return first.get("role") == "system" and first.get("content") == DEFAULT_SYSTEM


def build_fake() -> Any:
    app = FastAPI()
    seen: dict[str, list[Any]] = {"requests": [], "cancelled": []}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/debug")
    async def debug() -> dict[str, Any]:
        return seen

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": FAKE_MODEL, "object": "model", "created": 1,
                                            "owned_by": "fake"}]}

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> Any:
        body = await request.json()
        seen["requests"].append(body)
        last = str(body["messages"][-1].get("content"))
        if is_summary_request(body):
            last = "__status:500" if "__summary_fail" in last else "__summary"
        if last.startswith("__status:"):
            status = int(last.split(":")[1])
            return JSONResponse({"error": {"message": f"fake {status}", "type": "fake",
                                           "param": None, "code": "fake_error"}},
                                status_code=status, headers={"Retry-After": "7"})
        if last.startswith("__slow:"):
            deadline = time.monotonic() + float(last.split(":")[1])
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    seen["cancelled"].append(last)
                    return JSONResponse({}, status_code=499)
                await asyncio.sleep(0.05)
        text = FAKE_SUMMARY if last == "__summary" else f"echo: {last}"
        usage = {"prompt_tokens": len(body["messages"]), "completion_tokens": 3,
                 "total_tokens": len(body["messages"]) + 3}
        envelope = {"id": "chatcmpl-fake", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            return {**envelope, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text},
                 "finish_reason": "stop"}]}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data = {**envelope, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(data)}\n\n"

        async def events() -> Any:
            yield chunk({"role": "assistant", "content": ""})
            for word in text.split(" "):
                yield chunk({"content": word + " "})
                if last.startswith("__drip:"):
                    await asyncio.sleep(float(last.split(":")[1]))
            if last in ("__cut", "__eof"):
                if last == "__cut":
                    yield "data: [DONE]\n\n"
                return
            yield chunk({}, "stop")
            if (body.get("stream_options") or {}).get("include_usage") and last != "__nousage":
                data = {**envelope, "object": "chat.completion.chunk", "choices": [],
                        "usage": usage}
                yield f"data: {json.dumps(data)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


# -- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc:
    """A server process on 127.0.0.1; ``url`` is its API base (``http://127.0.0.1:P/v1``)."""

    def __init__(self, args: list[str], port: int, *,
                 env: dict[str, str] | None = None) -> None:
        self.port = port
        self.root = f"http://127.0.0.1:{port}"
        self.url = f"{self.root}/v1"
        self.args = args
        self.proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def ready(self, timeout: float = 60.0) -> Proc:
        """Wait until ``/health`` answers (200, or 503 from a gateway whose upstream is
        down)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args} exited: "
                                   f"{self.proc.stderr.read().decode()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.root}/health", timeout=1).status_code in (200, 503):
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.args} did not start in {timeout} s")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> str:
        """Stop it; its stderr (the log)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.stderr.read().decode("utf-8", "replace")


def start_fake() -> Proc:
    port = free_port()
    return Proc([sys.executable, str(Path(__file__).resolve()), str(port)], port).ready()


def launch_gateway(upstream: str, *args: str, env: dict[str, str] | None = None,
                   context: int = 2048, model: str = FAKE_MODEL) -> Proc:
    """A gateway process on its way up (call ``ready()``)."""
    port = free_port()
    return Proc([*CLI, "serve", "--upstream", upstream, "--upstream-model", model,
                 "--upstream-context", str(context), "--port", str(port), "--log-level",
                 "warning", *args], port, env=env)


def start_gateway(upstream: str, *args: str, env: dict[str, str] | None = None,
                  context: int = 2048, model: str = FAKE_MODEL) -> Proc:
    return launch_gateway(upstream, *args, env=env, context=context, model=model).ready()


def start_gateways(count: int, upstream: str, *args: str) -> list[Proc]:
    """``count`` replicas with the same options, started side by side."""
    procs = [launch_gateway(upstream, *args) for _ in range(count)]
    try:
        return [proc.ready() for proc in procs]
    except BaseException:
        for proc in procs:
            proc.stop()
        raise


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()


# -- the fake's own checks ----------------------------------------------------------------------
def test_the_fake_echoes_and_records() -> None:
    fake = start_fake()
    with running(fake):
        body = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi there"}]}
        reply = httpx.post(f"{fake.url}/chat/completions", json=body).json()
        assert reply["choices"][0]["message"]["content"] == "echo: hi there"
        failed = httpx.post(f"{fake.url}/chat/completions", json={
            **body, "messages": [{"role": "user", "content": "__status:429"}]})
        assert (failed.status_code, failed.headers["retry-after"]) == (429, "7")
        assert len(httpx.get(f"{fake.root}/debug").json()["requests"]) == 2


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(build_fake(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
