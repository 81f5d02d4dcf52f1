"""The text side (tokens, messages, trim, memory, stores, text CLI) never imports torch, and no
module imports a layer above its own.

Torch: at run time (a subprocess imports it and looks at ``sys.modules``) and statically. Layers:
statically. Both are import-linter contracts in pyproject.toml, which see imports inside
functions too; each test of a contract breaks it on purpose in a copy of the tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
    assert "Contracts: 3 kept, 0 broken." in result.stdout
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
    assert "Contracts: 2 kept, 1 broken." in result.stdout
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
    assert "Contracts: 2 kept, 1 broken." in result.stdout
    assert f"{LAYERS} BROKEN" in result.stdout
    assert "contextwindow.messages is not allowed to import contextwindow.memory" in result.stdout
    assert "- contextwindow.messages -> contextwindow.memory (l." in result.stdout


def test_layers_contract_fails_on_a_module_without_a_layer(tmp_path: Path) -> None:
    """Every top-level module has a place in the order: a new one must be given one."""
    (_copy_tree(tmp_path) / "stray.py").write_text('"""Placed nowhere."""\n', encoding="utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 2 kept, 1 broken." in result.stdout
    assert "The following modules are not listed as layers:\n\n- contextwindow.stray\n" in (
        result.stdout)
