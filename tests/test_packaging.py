"""The wheel ships every module and ``py.typed`` (PEP 561), so type checkers read the package's
annotations once it is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "contextwindow"


def test_py_typed_is_declared_as_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["contextwindow"]
    assert (PACKAGE / "py.typed").is_file()


def test_wheel_holds_every_module_and_py_typed(tmp_path: Path) -> None:
    """Built from a copy of the tree (a build writes build/ and egg-info next to its sources),
    with the installed setuptools (no download)."""
    tree = tmp_path / "tree"
    for name in ("pyproject.toml", "README.md"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(PACKAGE, tree / "src" / "contextwindow",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path / "dist"), str(tree)], check=True)
    (wheel,) = (tmp_path / "dist").glob("contextwindow-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist()
               if name.startswith("contextwindow/")}
    sources = {f"contextwindow/{path.relative_to(PACKAGE).as_posix()}"
               for path in PACKAGE.rglob("*") if path.suffix == ".py" or path.name == "py.typed"}
    assert "contextwindow/py.typed" in shipped
    assert shipped == sources
