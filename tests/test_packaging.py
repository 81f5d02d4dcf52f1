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


def test_serve_extra_runs_uvicorn_on_uvloop_and_httptools() -> None:
    """``contextwindow[serve]`` brings the event loop and HTTP parser that uvicorn picks by
    itself ("auto", what ``contextwindow serve`` runs with) once they are installed: the
    gateway's requests take about 0.3 ms less on them (docs/serve.md)."""
    from uvicorn.loops.auto import auto_loop_factory
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extra = [spec.split(">=")[0] for spec in config["project"]["optional-dependencies"]["serve"]]
    assert {"uvloop", "httptools"} <= set(extra)
    assert AutoHTTPProtocol.__module__ == "uvicorn.protocols.http.httptools_impl"
    loop = auto_loop_factory(use_subprocess=False)()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
