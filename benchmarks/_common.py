"""Helpers shared by the benchmarks: interleaved timing, medians, percentiles and spread, machine
facts, free loopback ports, the Redis and PostgreSQL servers the store benchmarks need, and the
JSON every README table is generated from (``docs/results/<name>.json``)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
SERVICES = Path(__file__).resolve().parents[1] / "scripts" / "test-services.sh"
SERVICE_VARS = ("CONTEXTWINDOW_TEST_REDIS_URL", "CONTEXTWINDOW_TEST_POSTGRES_DSN")


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "processor": platform.machine()}


def provenance() -> dict[str, Any]:
    """The commit the benchmark ran at (``+dirty`` with local changes) and when."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                             check=False)
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--", "src", "benchmarks"))
    return {"commit": commit + ("+dirty" if dirty else ""),
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": " ".join([".venv/bin/python", _relative(Path(sys.argv[0])), *sys.argv[1:]])}


def _relative(script: Path) -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        return str(script.resolve().relative_to(root))
    except ValueError:
        return str(script)


def spread(times: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    """Median, min and max of ``times`` (seconds) times ``scale``, and how many there were."""
    return {"median": round(statistics.median(times) * scale, digits),
            "min": round(min(times) * scale, digits), "max": round(max(times) * scale, digits),
            "runs": len(times)}


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100])."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server the benchmark starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def interleaved(contenders: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1,
                before_round: Callable[[], Any] | None = None) -> dict[str, list[float]]:
    """Wall times of each contender over ``rounds`` rounds, one call each per round, the order
    alternating (forward, then reversed), after ``warmup`` untimed calls each: slow phases of a
    shared machine then hit every contender alike instead of whichever ran in that block.
    ``before_round`` runs, untimed, before every round (warm-up rounds too): for contenders
    whose input changes from round to round."""
    names = list(contenders)
    for _ in range(warmup):
        if before_round is not None:
            before_round()
        for name in names:
            contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        if before_round is not None:
            before_round()
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def add_out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--out", type=Path, default=RESULTS / f"{name}.json",
                        help="where to write the JSON (default: %(default)s); '-' for stdout only")


def emit(result: dict[str, Any], out: Path | str | None = None) -> None:
    """Print the benchmark's one JSON object on stdout, and write it to ``out`` if given."""
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    sys.stdout.write(text)
    if out is not None and str(out) != "-":
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
        log(f"wrote {out}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_services() -> tuple[dict[str, str], str | None]:
    """The Redis and PostgreSQL URLs, from the environment or from servers started here exactly
    as the tests get them (``scripts/test-services.sh``); with the state directory to pass to
    ``stop_services`` (None when nothing was started)."""
    env = {var: os.environ[var] for var in SERVICE_VARS if os.environ.get(var)}
    if len(env) == len(SERVICE_VARS):
        return env, None
    state = tempfile.mkdtemp(prefix="contextwindow-bench-services.")
    out = subprocess.run(["bash", str(SERVICES), "start", state], text=True,
                         stdout=subprocess.PIPE, check=False)
    for line in out.stdout.splitlines():
        var, _, value = line.partition("=")
        env.setdefault(var, value)
    return env, state


def stop_services(state: str | None) -> None:
    """Stop the servers ``start_services`` started, if it started any."""
    if state is not None:
        subprocess.run(["bash", str(SERVICES), "stop", state], check=False)
