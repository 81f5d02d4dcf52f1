"""The text side (tokens, messages, trim, memory, stores, text CLI) never imports torch, no
module imports a layer above its own, and the type checker of `make lint` rejects a wrong
argument type.

Torch: at run time (a subprocess imports it and looks at ``sys.modules``) and statically. Layers:
statically. Both are import-linter contracts in pyproject.toml, which see imports inside
functions too; each test of a contract (and of the type check) breaks it on purpose in a copy
of the tree.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest


def test_text_side_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import contextwindow, contextwindow.tokens, contextwindow.messages, contextwindow.trim\n"
        "import contextwindow.memory, contextwindow.stores, contextwindow.samples\n"
        "from contextwindow.cli import main\n"
        "main(['count', '--text', '-'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], input="hello", capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_top_level_exports_summary_memories_without_torch_or_openai() -> None:
    code = (
        "import sys\n"
        "import contextwindow\n"
        "from contextwindow import (SummaryBufferMemory, SummaryMemory, Summarizer,\n"
        "    KeyFactsSummarizer, CombinedSummarizer, FunctionSummarizer, OpenAISummarizer,\n"
        "    TransformersSummarizer)\n"
        "assert all(hasattr(contextwindow, name) for name in contextwindow.__all__)\n"
        "assert {'SummaryBufferMemory', 'SummaryMemory', 'KeyFactsSummarizer'} <= "
        "set(contextwindow.__all__)\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'openai') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run the import contract of ``root/pyproject.toml`` on the package in ``root/src``."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


LAYERS = "Layers: each module imports only from the layers below it"


def test_import_contract_holds_on_the_tree() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout
    assert f"{LAYERS} KEPT" in result.stdout


def _copy_tree(tmp_path: Path) -> Path:
    """A copy of the package and its contracts in ``tmp_path``; returns the package folder."""
    shutil.copytree(ROOT / "src" / "contextwindow", tmp_path / "src" / "contextwindow",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path / "src" / "contextwindow"


def _tree_with(tmp_path: Path, module: str, addition: str) -> Path:
    """:func:`_copy_tree` with ``addition`` in ``module`` (a path under src/contextwindow):
    after the ``__future__`` import when it is an import statement, else at the end of the file
    (a function that imports)."""
    path = _copy_tree(tmp_path) / module
    source = path.read_text(encoding="utf-8")
    if addition.startswith(("import", "from")):
        head, sep, tail = source.partition("from __future__ import annotations\n")
        assert sep, f"{module} lost its __future__ import; update this test"
        path.write_text(head + sep + addition + tail, encoding="utf-8")
    else:
        path.write_text(source + addition, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("addition", [
    "import torch\n",  # at module level
    "\n\ndef _probe():\n    import torch\n\n    return torch\n",  # only inside a function
])
def test_import_contract_fails_when_trim_imports_torch(tmp_path: Path, addition: str) -> None:
    """What `make lint` (so `make test`) does with a torch import on the text side."""
    result = _lint_imports(_tree_with(tmp_path, "trim.py", addition))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 3 kept, 1 broken." in result.stdout
    assert "contextwindow.trim is not allowed to import torch" in result.stdout
    assert "contextwindow.trim -> torch" in result.stdout


@pytest.mark.parametrize("addition", [
    "from .memory import Memory\n",  # at module level
    "\n\ndef _probe():\n    from .memory import Memory\n\n    return Memory\n",  # in a function
])
def test_layers_contract_fails_when_messages_imports_a_layer_above(tmp_path: Path,
                                                                   addition: str) -> None:
    """The bottom importing the top (here messages, which memory is built on, importing
    memory: both torch-free, so only the layers contract can object)."""
    result = _lint_imports(_tree_with(tmp_path, "messages.py", addition))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 3 kept, 1 broken." in result.stdout
    assert f"{LAYERS} BROKEN" in result.stdout
    assert "contextwindow.messages is not allowed to import contextwindow.memory" in result.stdout
    assert "- contextwindow.messages -> contextwindow.memory (l." in result.stdout


def test_import_contract_fails_when_the_gateway_imports_the_local_engine(tmp_path: Path) -> None:
    """The gateway's path (here its upstream backend) never imports generation: only the local
    engine (serve.local, serve._worker) does."""
    result = _lint_imports(_tree_with(tmp_path, "serve/upstream.py",
                                      "\n\ndef _probe():\n    from ..generation import Generator"
                                      "\n\n    return Generator\n"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 3 kept, 1 broken." in result.stdout
    assert ("contextwindow.serve.upstream is not allowed to import contextwindow.generation"
            in result.stdout)


def test_layers_contract_fails_on_a_module_without_a_layer(tmp_path: Path) -> None:
    """Every top-level module has a place in the order: a new one must be given one."""
    (_copy_tree(tmp_path) / "stray.py").write_text('"""Placed nowhere."""\n', encoding="utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 3 kept, 1 broken." in result.stdout
    assert "The following modules are not listed as layers:\n\n- contextwindow.stray\n" in (
        result.stdout)


MYPY = Path(sys.executable).with_name("mypy")


def _copy_mypy_cache(root: Path) -> None:
    """The tree's mypy cache (`make lint` leaves it) in ``root``, so that mypy re-checks only
    what the copy changed: ~10 s instead of ~100 s cold. Each SQLite shard is copied through
    SQLite's backup, a consistent snapshot even while another mypy writes it."""
    source = ROOT / ".mypy_cache"
    files = [path for path in source.rglob("*") if path.is_file()] if source.is_dir() else []
    for path in files:  # none before the first `make lint`: mypy starts cold
        target = root / ".mypy_cache" / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".db":
            with closing(sqlite3.connect(path)) as src, closing(sqlite3.connect(target)) as dst:
                src.backup(dst)
        elif not path.name.endswith(("-wal", "-shm")):
            shutil.copy2(path, target)


def test_type_check_fails_on_a_wrong_argument_type(tmp_path: Path) -> None:
    """What `make lint` (so `make test`) does with a call that passes an int for a message."""
    addition = ("\n\ndef _probe(counter: TokenCounter) -> int:\n"
                "    return counter.count_message(42)\n")
    root = _tree_with(tmp_path, "trim.py", addition)
    line = len((root / "src" / "contextwindow" / "trim.py").read_text().splitlines())
    _copy_mypy_cache(root)
    result = subprocess.run([str(MYPY)], cwd=root, capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f'src/contextwindow/trim.py:{line}: error: Argument 1 to "count_message" of '
            '"TokenCounter" has incompatible type "int"; expected "Message | Mapping[str, Any]"'
            "  [arg-type]") in result.stdout
