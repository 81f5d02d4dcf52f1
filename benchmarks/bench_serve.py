"""The OpenAI-compatible server on the real SmolLM2-135M-Instruct: throughput, latency, and what
trimming buys on an over-long conversation.

Starts ``contextwindow serve`` twice as subprocesses on free loopback ports (one model each,
the default 8,192-token window): ``--overflow trim`` and ``--overflow none``. Then, with the
official openai client:

* short requests (a one-line question, greedy, ``max_tokens`` 8): requests/s and p50 / p95
  latency with 1 client and with 4 concurrent clients (the server runs one request at a time);
* a ~20,000-token conversation (synthetic, ``samples.sample_conversation``): time to the first
  streamed token when the server trims it to the window, and what the server without trimming
  does with it (it must refuse cleanly with ``context_length_exceeded``: the model's window is
  8,192 tokens, so there is nothing slower to compare against).

Prints one JSON object. Run: .venv/bin/python benchmarks/bench_serve.py  (~5-10 min on 2 CPUs)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import emit, free_port, log, machine, percentile

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
QUESTIONS = ("What is the capital of France?", "Name a primary colour.", "What is 2 plus 2?",
             "Say hello in Spanish.", "What colour is the sky?", "Name a fruit.")


SERVE = (sys.executable, "-m", "contextwindow", "serve", "--model", MODEL, "--log-level",
         "warning")


class Server:
    """An OpenAI-compatible server in a subprocess on a free loopback port: ``contextwindow
    serve`` by default, or any ``command`` that takes ``--port`` (llama.cpp's server)."""

    def __init__(self, *options: str, command: tuple[str, ...] = SERVE) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        args = [*command, "--port", str(self.port), *options]
        self.process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        started = time.perf_counter()
        while True:
            try:
                httpx.get(f"{self.url}/models", timeout=2).raise_for_status()
                break
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited: {self.process.stderr.read()}") from None
                if time.perf_counter() - started > 600:
                    raise RuntimeError("the server did not start in 10 minutes") from None
                time.sleep(0.2)
        self.startup_s = time.perf_counter() - started

    def client(self) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url, api_key="unused", max_retries=0, timeout=1800)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def short_requests(server: Server, clients: int, per_client: int, max_tokens: int
                   ) -> dict[str, Any]:
    client = server.client()
    latencies: list[float] = []
    tokens: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def worker(index: int) -> None:
        barrier.wait()
        for k in range(per_client):
            question = QUESTIONS[(index + k) % len(QUESTIONS)]
            start = time.perf_counter()
            reply = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": question}],
                max_tokens=max_tokens, temperature=0)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                tokens.append(reply.usage.completion_tokens)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 3),
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p95_s": round(percentile(latencies, 95), 3),
        "completion_tokens_per_s": round(sum(tokens) / wall, 2),
        "wall_s": round(wall, 2),
    }


def long_conversation(target_tokens: int) -> tuple[list[dict[str, Any]], int]:
    """A synthetic chat of about ``target_tokens`` SmolLM2 tokens, ending with a user turn."""
    from transformers import AutoTokenizer

    from contextwindow.messages import to_openai
    from contextwindow.models import resolve
    from contextwindow.samples import sample_conversation
    from contextwindow.tokens import TokenCounter

    counter = TokenCounter.from_hf(AutoTokenizer.from_pretrained(resolve()))
    turns = 100
    while True:
        messages = to_openai(sample_conversation(turns, seed=11))
        messages.append({"role": "user", "content": "Thanks. So what did we decide about the "
                         "quarterly budget?"})
        tokens = counter.count_messages(messages)
        if tokens >= target_tokens:
            return messages, tokens
        turns = int(turns * target_tokens / tokens) + 5


def first_token(server: Server, messages: list[dict[str, Any]], max_tokens: int
                ) -> dict[str, Any]:
    """Stream one request: seconds to the first content token, to the end, and the usage."""
    import openai

    client = server.client()
    start = time.perf_counter()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
            stream_options={"include_usage": True})
    except openai.APIStatusError as exc:
        error = exc.body if isinstance(exc.body, dict) else {"message": str(exc)}
        return {"ok": False, "status": exc.status_code, "code": error.get("code"),
                "message": error.get("message"),
                "seconds_to_error": round(time.perf_counter() - start, 3)}
    ttft = None
    text = []
    usage = None
    for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            if ttft is None:
                ttft = time.perf_counter() - start
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    total = time.perf_counter() - start
    return {
        "ok": True,
        "time_to_first_token_s": round(ttft, 2) if ttft is not None else None,
        "total_s": round(total, 2),
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "trimmed_tokens": usage.model_extra["trimmed_tokens"],
        "trimmed_messages": usage.model_extra["trimmed_messages"],
        "trimmed_tokens_header": int(raw.headers["x-contextwindow-trimmed-tokens"]),
        "reply": "".join(text),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-client", type=int, default=8,
                        help="short requests per client (1-client run); the 4-client run "
                        "sends the same total")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--long-tokens", type=int, default=20_000)
    parser.add_argument("--long-max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None,
                        help="the servers' --threads (default: torch's choice)")
    args = parser.parse_args()

    server_options = ["--threads", str(args.threads)] if args.threads else []
    result: dict[str, Any] = {
        "benchmark": "serve", "machine": machine(), "model": MODEL,
        "server_threads": args.threads or "default",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join(["benchmarks/bench_serve.py", *sys.argv[1:]]),
    }
    log("starting the trimming server...")
    trimming = Server("--overflow", "trim", *server_options)
    result["server_startup_s"] = round(trimming.startup_s, 2)
    try:
        window = trimming.client().models.list().data[0].model_extra["context_window"]
        result["context_window"] = window
        warm = trimming.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert warm.usage.completion_tokens >= 1
        total = args.per_client
        result["short_requests"] = {"max_tokens": args.max_tokens, "temperature": 0, "runs": []}
        for clients in (1, 4):
            log(f"{total} short requests with {clients} client(s)...")
            run = short_requests(trimming, clients, max(1, total // clients), args.max_tokens)
            result["short_requests"]["runs"].append(run)
            log(f"  {run}")

        messages, tokens = long_conversation(args.long_tokens)
        log(f"a {tokens}-token conversation ({len(messages)} messages), trimmed...")
        long_result: dict[str, Any] = {"conversation_tokens": tokens,
                                       "conversation_messages": len(messages),
                                       "max_tokens": args.long_max_tokens}
        long_result["trim"] = first_token(trimming, messages, args.long_max_tokens)
        log(f"  {long_result['trim']}")
    finally:
        trimming.stop()

    log("starting the server without trimming...")
    untrimmed = Server("--overflow", "none", *server_options)
    try:
        long_result["none"] = first_token(untrimmed, messages, args.long_max_tokens)
        log(f"  {long_result['none']}")
    finally:
        untrimmed.stop()
    none = long_result["none"]
    long_result["verdict"] = (
        f"without trimming the request fails cleanly: HTTP {none['status']} {none['code']} "
        f"after {none['seconds_to_error']} s" if not none["ok"] else
        f"without trimming the first token took {none['time_to_first_token_s']} s")
    result["long_conversation"] = long_result
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    emit(result)


if __name__ == "__main__":
    main()
