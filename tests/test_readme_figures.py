"""Every benchmark table in the README is exactly what its committed JSON renders to.

The tables sit between ``<!-- table: NAME -->`` markers; ``benchmarks/readme_tables.py``
renders them from ``docs/results/NAME.json`` (that file's benchmark writes it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import readme_tables

README = (ROOT / "README.md").read_text(encoding="utf-8")
TABLES = dict(readme_tables.tables(README))


def test_every_rendered_benchmark_has_its_table_in_the_readme() -> None:
    assert sorted(TABLES) == sorted(readme_tables.RENDER)


@pytest.mark.parametrize("name", sorted(readme_tables.RENDER))
def test_the_readme_table_is_what_the_json_renders(name: str) -> None:
    assert TABLES[name] == readme_tables.render(name)


@pytest.mark.parametrize("name", sorted(readme_tables.RENDER))
def test_the_json_names_its_command_and_commit(name: str) -> None:
    data = json.loads((ROOT / "docs" / "results" / f"{name}.json").read_text(encoding="utf-8"))
    assert data["command"].startswith(f".venv/bin/python benchmarks/{name}.py")
    assert len(data["commit"].removesuffix("+dirty")) == 40
    assert f"benchmarks/{name}.py" in README  # the README names the command too


def test_equal_work_was_asserted_not_just_logged() -> None:
    trim = json.loads((ROOT / "docs" / "results" / "bench_trim.json").read_text())
    memory = json.loads((ROOT / "docs" / "results" / "bench_memory.json").read_text())
    assert trim["identical_result"] is True and trim["inputs"]["rounds"] >= 5
    assert memory["identical_views"] is True and memory["inputs"]["rounds"] >= 5
    assert all(
        len(s) == memory["inputs"]["rounds"] for s in memory["messages_fed_per_round"].values()
    )


def test_a_changed_figure_is_caught(tmp_path: Path) -> None:
    name = "bench_trim"
    body = TABLES[name]
    changed = README.replace(body, body.replace("x faster", "0x faster", 1))
    assert readme_tables.rewrite(changed) != changed
