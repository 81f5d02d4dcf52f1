"""What the gateway costs: ``contextwindow serve --upstream`` against calling the upstream directly.

The upstream answers instantly (a bare ASGI app that reads the request and returns a fixed
completion), so the difference between a request through the gateway and the same request sent
directly is the gateway's own work: parsing, the session lock, reading the history, fitting it
to the window (tiktoken counts), forwarding, and the durable store of the turn.

* Overhead per request, p50 / p99, on sessions of 10 and 10,000 stored messages, for SQLite,
  Redis and PostgreSQL: each round sends one request directly (the body the gateway would send:
  the session's history fitted to the window, plus the new message) and one through the gateway
  (only the new message, with ``X-Session-Id``), alternating order, after a warm-up.
* Throughput on PostgreSQL with 1 and 2 gateway replicas: ``--concurrency`` clients (one asyncio
  process, one session each, spread over the replicas) for ``--seconds``.
* The server stack (``servers``): two gateways on SQLite, one on uvicorn's pure-Python stack
  (``asyncio`` loop, ``h11``), one on what ``contextwindow[serve]`` installs and uvicorn picks
  by itself (``uvloop``, ``httptools``), requests alternating between them: p50 / p99 and the
  gateway process's CPU time per request (user + system, from ``/proc``), which the machine's
  wake-up latencies do not move.
* The upstream client (``clients``): what the gateway forwards with, ``httpx.AsyncClient``
  against ``aiohttp.ClientSession`` (the gateway's), in one uvloop process, posting the body a
  10,000-message session forwards to the instant upstream, calls alternating: p50 and the
  process's CPU per request, back to back and after a 4 ms idle gap per call (a gateway between
  turns: an idle core runs the next call with cold caches).

The Redis and PostgreSQL servers are started by ``scripts/test-services.sh`` unless
``CONTEXTWINDOW_TEST_REDIS_URL`` / ``CONTEXTWINDOW_TEST_POSTGRES_DSN`` are set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from _common import (
    add_out_argument,
    emit,
    free_port,
    interleaved,
    log,
    machine,
    provenance,
    start_services,
    stop_services,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gpt-4o-mini"
CONTEXT = 8192
MAX_TOKENS = 64
SIZES = (10, 10_000)
CLI = [sys.executable, "-c", "from contextwindow.cli import entry_point; entry_point()"]
REPLY = json.dumps({
    "id": "chatcmpl-instant", "object": "chat.completion", "created": 0, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Noted."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}).encode()


# -- the instant upstream (run as --instant-upstream PORT) --------------------------------------
async def instant(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": REPLY})


# -- processes and stores -----------------------------------------------------------------------
def start(args: list[str], port: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{args} exited: {proc.stderr.read().decode()[-1500:]}")
        try:
            httpx.get(f"{root}/health", timeout=1)
            return proc, root
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{args} did not start")


# ``contextwindow serve`` with uvicorn's loop and HTTP implementation chosen (argv 1 and 2):
# the CLI leaves both to uvicorn ("auto").
ON_STACK = ("import sys, uvicorn; loop, http = sys.argv[1:3]; run = uvicorn.run; "
            "uvicorn.run = lambda *a, **k: run(*a, loop=loop, http=http, **k); "
            "sys.argv = ['contextwindow', *sys.argv[3:]]; "
            "from contextwindow.cli import entry_point; entry_point()")
STACKS = {"asyncio_h11": ("asyncio", "h11"), "uvloop_httptools": ("uvloop", "httptools")}


def start_gateway(upstream: str, store: list[str],
                  stack: tuple[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = CLI if stack is None else [sys.executable, "-c", ON_STACK, *stack]
    return start([*command, "serve", "--upstream", upstream, "--upstream-model", MODEL,
                  "--upstream-context", str(CONTEXT), "--default-max-tokens", str(MAX_TOKENS),
                  "--port", str(port), "--log-level", "warning", *store], port)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def store_options(kind: str, env: dict[str, str], tmp: str, name: str) -> list[str]:
    if kind == "sqlite":
        return ["--store", os.path.join(tmp, f"{name}.db")]
    if kind == "redis":
        return ["--store", env["CONTEXTWINDOW_TEST_REDIS_URL"], "--store-namespace", name]
    return ["--store", env["CONTEXTWINDOW_TEST_POSTGRES_DSN"], "--store-namespace", name]


def history(turns: int, tag: str) -> list[Any]:
    """``2 * turns`` messages, stored as the gateway stores turns."""
    from contextwindow.messages import Message

    out = []
    for t in range(turns):
        turn = f"turn-{uuid.uuid4().hex}"
        out += [Message(role="user", content=f"{tag} question {t}: could you check whether the "
                        "numbers still add up and tell me what changed since last week?",
                        id=f"{turn}.0"),
                Message(role="assistant", content=f"Answer {t}: the totals match; two invoices "
                        "moved to next month and the travel budget is 4% lower.",
                        id=f"{turn}.reply")]
    return out


def preload(options: list[str], sessions: dict[str, int]) -> dict[str, list[Any]]:
    """Store each session's history (one ``append_many`` each) and return it."""
    from contextwindow.serve.sessions import open_store

    namespace = options[3] if len(options) > 2 else None
    store = open_store(options[1], namespace=namespace)
    try:
        stored = {}
        for sid, size in sessions.items():
            stored[sid] = history(size // 2, sid)
            store.append_many(sid, stored[sid])
        return stored
    finally:
        store.close()


def cleanup(kind: str, env: dict[str, str], name: str) -> None:
    if kind == "redis":
        import redis

        with redis.Redis.from_url(env["CONTEXTWINDOW_TEST_REDIS_URL"]) as client:
            keys = list(client.scan_iter(match=f"{name}:*", count=1000))
            if keys:
                client.delete(*keys)
    elif kind == "postgres":
        import psycopg
        from psycopg import sql

        with psycopg.connect(env["CONTEXTWINDOW_TEST_POSTGRES_DSN"], autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(name)))


# -- measurements -------------------------------------------------------------------------------
def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2)}


def overhead(upstream: str, gateway: str, sid: str, stored: list[Any],
             rounds: int) -> dict[str, Any]:
    from contextwindow.messages import Message, to_openai
    from contextwindow.serve import WindowPolicy
    from contextwindow.tokens import TokenCounter

    new = {"role": "user", "content": "And what about the hotel booking for Lisbon?"}
    window = WindowPolicy(TokenCounter.for_model(MODEL), CONTEXT)
    fitted = window.fit([*stored, Message(**new)], MAX_TOKENS)
    direct_body = json.dumps({"model": MODEL, "messages": to_openai(fitted.messages),
                              "max_tokens": MAX_TOKENS}).encode()
    gateway_body = json.dumps({"model": MODEL, "messages": [new],
                               "max_tokens": MAX_TOKENS}).encode()
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=60) as direct, httpx.Client(timeout=60) as through:
        def call_direct() -> None:
            direct.post(f"{upstream}/chat/completions", content=direct_body,
                        headers=headers).raise_for_status()

        def call_gateway() -> None:
            through.post(f"{gateway}/v1/chat/completions", content=gateway_body,
                         headers={**headers, "X-Session-Id": sid}).raise_for_status()

        times = interleaved({"direct": call_direct, "gateway": call_gateway}, rounds,
                            warmup=10)
    direct_p, gateway_p = percentiles(times["direct"]), percentiles(times["gateway"])
    return {"stored_messages": len(stored), "forwarded_messages": len(fitted.messages),
            "forwarded_prompt_tokens": fitted.prompt_tokens, "requests": rounds,
            "direct": direct_p, "gateway": gateway_p,
            "overhead_p50_ms": round(gateway_p["p50_ms"] - direct_p["p50_ms"], 2),
            "overhead_p99_ms": round(gateway_p["p99_ms"] - direct_p["p99_ms"], 2)}


async def _hammer(roots: list[str], clients: int, seconds: float) -> dict[str, Any]:
    body = json.dumps({"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [
        {"role": "user", "content": "Short question: is the budget still fine?"}]}).encode()
    done, failed = 0, 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def worker(k: int) -> None:
            nonlocal done, failed
            url = f"{roots[k % len(roots)]}/v1/chat/completions"
            headers = {"content-type": "application/json", "X-Session-Id": f"load-{k}"}
            while time.perf_counter() < deadline:
                reply = await client.post(url, content=body, headers=headers)
                if reply.status_code == 200:
                    done += 1
                else:
                    failed += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        wall = time.perf_counter() - start
    return {"requests": done, "failed": failed, "wall_s": round(wall, 2),
            "requests_per_s": round(done / wall, 1)}


def throughput(upstream: str, env: dict[str, str], tmp: str, clients: int,
               seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {"store": "postgres", "clients": clients, "seconds": seconds}
    for replicas in (1, 2):
        name = f"cwbench_{uuid.uuid4().hex[:10]}"
        options = store_options("postgres", env, tmp, name)
        procs = [start_gateway(upstream, options) for _ in range(replicas)]
        try:
            log(f"throughput: {replicas} replica(s)...")
            asyncio.run(_hammer([root for _, root in procs], clients, 1.0))  # warm-up
            result[f"replicas_{replicas}"] = asyncio.run(
                _hammer([root for _, root in procs], clients, seconds))
        finally:
            for proc, _ in procs:
                stop(proc)
            cleanup("postgres", env, name)
    result["speedup"] = round(result["replicas_2"]["requests_per_s"]
                              / result["replicas_1"]["requests_per_s"], 2)
    return result


def stacks(upstream: str, tmp: str, rounds: int) -> dict[str, Any]:
    """Each size's session through a gateway on each of :data:`STACKS`, requests alternating
    between them (after 20 warm-up rounds): latency and the gateway's CPU per request."""
    body = json.dumps({"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [
        {"role": "user", "content": "And what about the hotel booking for Lisbon?"}]}).encode()
    headers = {"content-type": "application/json"}
    out: dict[str, Any] = {"store": "sqlite", "requests": rounds}
    for size in SIZES:
        procs = {}
        try:
            for name, stack in STACKS.items():
                options = ["--store", os.path.join(tmp, f"stack-{name}-{size}.db")]
                preload(options, {"s": size})
                procs[name] = start_gateway(upstream, options, stack)
            with httpx.Client(timeout=60) as client:
                calls = {name: lambda root=root: client.post(
                    f"{root}/v1/chat/completions", content=body,
                    headers={**headers, "X-Session-Id": "s"}).raise_for_status()
                    for name, (_, root) in procs.items()}
                for _ in range(20):
                    for call in calls.values():
                        call()
                before = {name: cpu_seconds(proc.pid) for name, (proc, _) in procs.items()}
                log(f"server stacks: session of {size} messages...")
                times = interleaved(calls, rounds, warmup=0)
                after = {name: cpu_seconds(proc.pid) for name, (proc, _) in procs.items()}
        finally:
            for proc, _ in procs.values():
                stop(proc)
        out[f"session_{size}"] = {name: {**percentiles(times[name]), "cpu_ms_per_request": round(
            1000 * (after[name] - before[name]) / rounds, 2)} for name in STACKS}
    return out


def clients(upstream: str, rounds: int) -> dict[str, Any]:
    """httpx against aiohttp posting the same forwarded body (see the module docstring)."""
    import aiohttp
    import uvloop

    from contextwindow.messages import Message, to_openai
    from contextwindow.serve import WindowPolicy
    from contextwindow.tokens import TokenCounter

    stored = history(SIZES[-1] // 2, "clients")
    fitted = WindowPolicy(TokenCounter.for_model(MODEL), CONTEXT).fit(
        [*stored, Message(role="user", content="And the hotel?")], MAX_TOKENS)
    body = json.dumps({"model": MODEL, "messages": to_openai(fitted.messages),
                       "max_tokens": MAX_TOKENS}).encode()
    url, headers = f"{upstream}/chat/completions", {"content-type": "application/json"}

    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=60) as hx, aiohttp.ClientSession() as ah:
            async def with_httpx() -> None:
                reply = await hx.send(hx.build_request("POST", url, content=body,
                                                       headers=headers), stream=True)
                json.loads(await reply.aread())
                await reply.aclose()

            async def with_aiohttp() -> None:
                async with ah.post(url, data=body, headers=headers) as reply:
                    json.loads(await reply.read())

            calls = {"httpx": with_httpx, "aiohttp": with_aiohttp}
            out: dict[str, Any] = {"body_bytes": len(body), "requests": rounds}
            for gap in (0.0, 0.004):
                for call in calls.values():
                    for _ in range(20):
                        await call()
                times: dict[str, list[float]] = {name: [] for name in calls}
                cpu = dict.fromkeys(calls, 0.0)
                for r in range(rounds):
                    for name in calls if r % 2 == 0 else reversed(list(calls)):
                        await asyncio.sleep(gap)
                        started, used = time.perf_counter(), time.process_time()
                        await calls[name]()
                        times[name].append(time.perf_counter() - started)
                        cpu[name] += time.process_time() - used
                out[f"gap_{int(gap * 1000)}ms"] = {name: {
                    **percentiles(times[name]),
                    "cpu_ms_per_request": round(1000 * cpu[name] / rounds, 3)} for name in calls}
            return out

    log("upstream clients: httpx against aiohttp...")
    return uvloop.run(run())


PARTS = ("overhead", "throughput", "servers", "clients")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300, help="requests per contender")
    parser.add_argument("--seconds", type=float, default=5.0, help="each throughput run")
    parser.add_argument("--concurrency", type=int, default=16, help="throughput clients")
    parser.add_argument("--stores", default="sqlite,redis,postgres")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"what to measure, of {','.join(PARTS)}; a subset is merged into "
                        "the JSON at --out (the other parts stay)")
    parser.add_argument("--instant-upstream", type=int, help=argparse.SUPPRESS)
    add_out_argument(parser, "bench_gateway")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if args.instant_upstream:
        import uvicorn

        uvicorn.run(instant, host="127.0.0.1", port=args.instant_upstream, log_level="warning")
        return
    needs_services = "throughput" in parts or (
        "overhead" in parts and args.stores != "sqlite")
    env, state = start_services() if needs_services else (dict(os.environ), None)
    tmp = tempfile.mkdtemp(prefix="contextwindow-bench.")
    port = free_port()
    upstream_proc, upstream_root = start(
        [sys.executable, str(Path(__file__).resolve()), "--instant-upstream", str(port)], port)
    upstream = f"{upstream_root}/v1"
    result: dict[str, Any] = {
        "benchmark": "gateway", **provenance(), "machine": machine(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "upstream": "instant (fixed reply)", "model": MODEL, "context_window": CONTEXT,
        "max_tokens": MAX_TOKENS}
    if set(parts) != set(PARTS) and args.out and Path(args.out).exists():
        # A part measured again: the other parts keep their figures and provenance, this
        # run's provenance is filed under ``reruns``.
        run = {key: result[key] for key in ("commit", "date", "command",
                                            "load_average_at_start")}
        result = json.loads(Path(args.out).read_text())
        result.setdefault("reruns", {}).update(dict.fromkeys(parts, run))
    try:
        for kind in args.stores.split(",") if "overhead" in parts else ():
            result.setdefault("overhead", {})
            name = f"cwbench_{uuid.uuid4().hex[:10]}"
            options = store_options(kind, env, tmp, name)
            sessions = {f"s{size}": size for size in SIZES}
            stored = preload(options, sessions)
            gateway, gateway_root = start_gateway(upstream, options)
            try:
                for sid, size in sessions.items():
                    log(f"overhead: {kind}, session of {size} messages...")
                    result["overhead"].setdefault(kind, {})[f"session_{size}"] = overhead(
                        upstream, gateway_root, sid, stored[sid], args.rounds)
            finally:
                stop(gateway)
                cleanup(kind, env, name)
        if "throughput" in parts:
            result["throughput"] = throughput(upstream, env, tmp, args.concurrency,
                                              args.seconds)
        if "servers" in parts:
            result["servers"] = stacks(upstream, tmp, args.rounds)
        if "clients" in parts:
            result["clients"] = clients(upstream, args.rounds)
        result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        stop(upstream_proc)
        subprocess.run(["rm", "-rf", tmp], check=False)
        stop_services(state)
    emit(result, args.out)


if __name__ == "__main__":
    main()
