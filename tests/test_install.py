"""``pip install contextwindow`` with nothing but its base dependencies, in a fresh venv: the
README's text-side quick start runs there, torch is never imported, and a model-side command
names the extra it needs.

The wheel is built from a copy of the tree; its dependencies are fetched once with ``pip
download`` (pip's own cache makes a second run quick) and installed with ``--no-index``, so
nothing but the base requirements can reach the venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from examples import WEATHER_MESSAGES, WEATHER_TOOLS
from test_readme import section_blocks

ROOT = Path(__file__).resolve().parents[1]

DRIVER = '''
import json, sys
inputs = json.load(open(sys.argv[1]))

class Completions:
    def __init__(self):
        self.calls = []
    def create(self, **kwargs):
        self.calls.append(kwargs)

class Client:
    chat = type("Chat", (), {"completions": Completions()})()

namespace = {"messages": inputs["messages"], "tools": inputs["tools"], "client": Client()}
exec(inputs["snippet"], namespace)
print(json.dumps({
    "count": namespace["counter"].count_messages(inputs["messages"], tools=inputs["tools"]),
    "kept": len(namespace["kept"]),
    "sent": namespace["client"].chat.completions.calls[0]["messages"],
    "heavy": sorted(m for m in ("torch", "transformers", "numpy") if m in sys.modules),
    "prefix": sys.prefix,
}))
'''


def run(*argv: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def test_base_install_runs_the_text_quick_start_without_torch(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for name in ("pyproject.toml", "README.md"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src" / "contextwindow", tree / "src" / "contextwindow",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    wheels = tmp_path / "wheels"
    pip = (sys.executable, "-m", "pip")
    built = run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, tree,
                cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("contextwindow-*.whl")
    fetched = run(*pip, "download", "-q", "--only-binary", ":all:", "-d", wheels, wheel,
                  cwd=tmp_path, env=env)
    assert fetched.returncode == 0, fetched.stderr

    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = run(python, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels,
                    wheel, cwd=tmp_path, env=env)
    assert installed.returncode == 0, installed.stderr
    names = run(python, "-m", "pip", "list", "--format", "json", cwd=tmp_path, env=env)
    listed = {p["name"].lower() for p in json.loads(names.stdout)}
    assert "torch" not in listed and "transformers" not in listed

    (snippet,) = section_blocks("Quick start (app developers)", "python")
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"snippet": snippet, "messages": WEATHER_MESSAGES,
                                  "tools": WEATHER_TOOLS}))
    (tmp_path / "driver.py").write_text(DRIVER)
    done = run(python, tmp_path / "driver.py", inputs, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert Path(result["prefix"]) == venv  # the fresh venv ran it, not the dev one
    assert result["heavy"] == []  # no torch, transformers or numpy on the text side
    assert result["count"] == 101 and result["kept"] == len(WEATHER_MESSAGES)
    assert result["sent"] == [{"role": "user", "content": "Hi, I'm Ingrid."},
                              {"role": "assistant", "content": "Hello Ingrid!"}]

    cli = venv / "bin" / "contextwindow"
    (tmp_path / "notes.txt").write_text("tiktoken is great!")
    counted = run(cli, "count", "notes.txt", cwd=tmp_path, env=env)
    assert (counted.returncode, counted.stdout.strip()) == (0, "6"), counted.stderr
    chat = run(cli, "chat", cwd=tmp_path, env={**env, "COLUMNS": "40"})
    assert chat.returncode == 2 and "Traceback" not in chat.stderr
    (line,) = chat.stderr.splitlines()
    assert re.fullmatch(r"error: this command needs the model extra \(No module named "
                        r"'(torch|transformers)'\); pip install 'contextwindow\[model\]'", line)
