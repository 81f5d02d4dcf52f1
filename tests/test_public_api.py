"""Each subpackage's ``__all__`` is what users call, and plumbing sits behind ``_`` modules.

A name is in a subpackage's ``__all__`` because a page (README.md, docs/*.md) shows it or the
command line imports it from the package; everything else stays importable where it is
defined, and older names stay importable from the package, outside ``__all__``. The checks are
functions, each also run on a made-up module or page, so that a broken rule is seen to fail.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
import tomllib
from pathlib import Path
from types import FunctionType, ModuleType

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "contextwindow"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("serve", "generation", "kv", "memory", "models", "rope", "stores", "summarize",
            "retrieval", "evaluate", "integrations", "cli")
# The command line's layer: what it imports from a package is used, whatever the pages say.
COMMAND_LINE = ("cli", "__main__")


def api_problems(module: ModuleType) -> list[str]:
    """What is wrong with ``module.__all__``: missing, a private or unresolved name, or a class
    or function without a docstring of its own, or one that is private under a public name."""
    names = getattr(module, "__all__", None)
    if names is None:
        return [f"{module.__name__} has no __all__"]
    problems = [f"{name} is listed twice" for name in sorted(set(names)) if names.count(name) > 1]
    for name in names:
        if name.startswith("_"):
            problems.append(f"{name} is private")
        if not hasattr(module, name):
            problems.append(f"{name} does not resolve")
            continue
        problems += _object_problems(name, getattr(module, name))
    return problems


def _object_problems(name: str, obj: object) -> list[str]:
    """A class or function must say what it is for, and be public where it is defined."""
    if not isinstance(obj, (type, FunctionType)):
        return []  # constants, registries, a typer app: nothing to read a docstring from
    problems = []
    doc = (obj.__doc__ or "").strip()
    # A dataclass without a docstring gets its signature as one: that is not documentation.
    if not doc or doc.startswith(f"{obj.__name__}("):
        problems.append(f"{name} has no docstring")
    if obj.__name__.startswith("_"):
        problems.append(f"{name} is the private {obj.__qualname__} under a public name")
    return problems


def star_names(module_name: str) -> set[str]:
    """The names ``from module_name import *`` binds."""
    namespace: dict[str, object] = {}
    exec(f"from {module_name} import *", namespace)  # noqa: S102 (the statement under test)
    namespace.pop("__builtins__", None)
    return set(namespace)


def private_import_paths(text: str) -> list[str]:
    """Dotted ``contextwindow`` paths in ``text`` that go through a ``_`` module."""
    return [path for path in re.findall(r"\bcontextwindow(?:\.\w+)+", text)
            if any(part.startswith("_") for part in path.split(".")[1:])]


def documented_names(text: str) -> set[str]:
    """The identifiers a page shows as code (fenced blocks and inline spans), string literals
    and ``--options`` left out. Of a dotted chain, only the head counts (``config.layer_types``
    shows ``config``), unless it starts with ``contextwindow`` or a subpackage
    (``kv.EVICTION_POLICIES``, ``contextwindow.models.model_device``): then every part does."""
    fenced = re.findall(r"```.*?```", text, flags=re.DOTALL)
    inline = re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    code = re.sub(r"\"[^\"\n]*\"|'[^'\n]*'", " ", "\n".join(fenced + inline))
    names: set[str] = set()
    for chain in re.findall(r"(?<![\w./-])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*", code):
        parts = chain.split(".")
        names.update(parts if parts[0] in ("contextwindow", *PACKAGES) else parts[:1])
    return names


def root_imports(files: list[Path], package: str) -> set[str]:
    """The names ``files`` import from ``contextwindow.<package>`` itself (not its modules),
    inside functions too."""
    names: set[str] = set()
    for path in files:
        dotted = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and _absolute(node, dotted) == (
                    f"contextwindow.{package}"):
                names.update(alias.name for alias in node.names)
    return names


def _absolute(node: ast.ImportFrom, package: tuple[str, ...]) -> str:
    """The module an ``import from`` in a module of ``package`` reads from."""
    if not node.level:
        return node.module or ""
    base = list(package[: len(package) - node.level + 1])
    return ".".join(base + ([node.module] if node.module else []))


def _command_line_files() -> list[Path]:
    return [path for name in COMMAND_LINE
            for path in ([SRC / f"{name}.py"] if (SRC / f"{name}.py").exists()
                         else sorted((SRC / name).rglob("*.py")))]


DOCUMENTED = documented_names("\n".join(page.read_text(encoding="utf-8") for page in PAGES))


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_documented_resolvable_names(package: str) -> None:
    assert api_problems(importlib.import_module(f"contextwindow.{package}")) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_star_import_gives_exactly_all(package: str) -> None:
    module = importlib.import_module(f"contextwindow.{package}")
    assert star_names(module.__name__) == set(module.__all__)


@pytest.mark.parametrize("package", [p for p in PACKAGES if p != "cli"])
def test_all_holds_only_what_the_pages_show_or_the_command_line_imports(package: str) -> None:
    """Plumbing stays out: a name is listed only if a user can have met it."""
    exported = set(importlib.import_module(f"contextwindow.{package}").__all__)
    used = root_imports(_command_line_files(), package)
    assert sorted(exported - DOCUMENTED - used) == []


def test_the_command_line_exports_its_entry_points() -> None:
    """The console script's target, the typer app and ``main(argv) -> exit status``."""
    from contextwindow import cli

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"contextwindow": "contextwindow.cli:entry_point"}
    assert cli.__all__ == ["app", "entry_point", "main"]
    assert isinstance(cli.app, typer.Typer)
    assert cli.main(["--version"]) == 0


def test_the_package_imports_across_subpackages_only_their_api() -> None:
    """A subpackage takes from another's root only what that one exports; its plumbing comes
    from the module that defines it (so ``__all__`` is never a list of internal imports)."""
    files = sorted(SRC.rglob("*.py"))
    wrong = []
    for package in PACKAGES:
        module = importlib.import_module(f"contextwindow.{package}")
        outside = [path for path in files if path.parent != SRC / package
                   and SRC / package not in path.parents]
        for name in sorted(root_imports(outside, package) - set(module.__all__)):
            if not (SRC / package / f"{name}.py").exists():  # a module is not a name
                wrong.append(f"contextwindow.{package}.{name}")
    assert wrong == []


def test_pages_never_name_a_private_module() -> None:
    for page in PAGES:
        assert private_import_paths(page.read_text(encoding="utf-8")) == [], page.name


def test_every_module_path_a_page_names_exists() -> None:
    """A renamed module leaves no page pointing at its old name."""
    missing = []
    for page in PAGES:
        for path in sorted(set(re.findall(r"\bcontextwindow(?:\.\w+)+",
                                          page.read_text(encoding="utf-8")))):
            if not _resolves(path):
                missing.append(f"{page.name}: {path}")
    assert missing == []


def _resolves(path: str) -> bool:
    """``path`` is a module, or an attribute chain on the longest module that prefixes it."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:end]))
        except ModuleNotFoundError:
            continue
        for attr in parts[end:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


# -- the checks fail when they should ----------------------------------------------------------


def undocumented() -> None:
    pass


def documented() -> None:
    """Says why."""


def _private() -> None:
    """Says why, but is not meant to be called from outside."""


class Undocumented:
    pass


def test_api_problems_names_each_broken_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ModuleType("fake_api")
    assert api_problems(fake) == ["fake_api has no __all__"]
    members = {"_hidden": documented, "bare": undocumented, "plain": Undocumented,
               "private": _private, "fine": documented, "LIMIT": 3}
    for name, value in members.items():
        setattr(fake, name, value)
    fake.__all__ = ["gone", "_hidden", "bare", "plain", "private", "fine", "LIMIT", "LIMIT"]
    assert api_problems(fake) == [
        "LIMIT is listed twice",
        "gone does not resolve",
        "_hidden is private",
        "bare has no docstring",
        "plain has no docstring",
        "private is the private _private under a public name",
    ]
    monkeypatch.setitem(sys.modules, "fake_api", fake)
    with pytest.raises(AttributeError, match="'gone'"):
        star_names("fake_api")
    fake.__all__ = ["_hidden", "fine"]
    assert star_names("fake_api") == {"_hidden", "fine"}
    del fake.__all__
    assert star_names("fake_api") == {"bare", "plain", "private", "fine", "LIMIT"}


def test_a_dataclass_signature_is_not_a_docstring() -> None:
    from dataclasses import dataclass

    @dataclass
    class Point:
        x: int

    assert _object_problems("Point", Point) == ["Point has no docstring"]


def test_page_checks_see_private_paths_and_only_code() -> None:
    page = ("Use `contextwindow.serve._worker.Job` or `contextwindow.kv.SinkCache`.\n"
            "```python\nfrom contextwindow.memory import RecallMemory\n"
            "config.layer_types  # `kv.make_cache`\nprint(\"Answer\")\n```\n"
            "`--sample 4` and `contextwindow/rope/layer_types.py`; plain words: Limits.\n")
    assert private_import_paths(page) == ["contextwindow.serve._worker.Job"]
    names = documented_names(page)
    assert {"Job", "SinkCache", "RecallMemory", "config", "make_cache"} <= names
    assert not {"layer_types", "Answer", "sample", "Limits"} & names
    assert not _resolves("contextwindow.serve.worker")
    assert _resolves("contextwindow.models.loading.part_paths")


def table_gaps(table: str, package_dir: Path) -> list[str]:
    """The modules of ``package_dir`` its row of the DEVELOPERS.md layout table does not name
    (in backticks, as the row names them), or ``["no row"]``."""
    row = re.search(rf"^\| `{package_dir.name}/` \| (.*) \|$", table, flags=re.MULTILINE)
    if row is None:
        return ["no row"]
    named = set(re.findall(r"`(\w+)`", row.group(1)))
    return sorted(path.stem for path in package_dir.glob("*.py")
                  if path.stem != "__init__" and path.stem not in named)


@pytest.mark.parametrize("package", PACKAGES)
def test_the_layout_table_names_every_module(package: str) -> None:
    table = (ROOT / "DEVELOPERS.md").read_text(encoding="utf-8")
    assert table_gaps(table, SRC / package) == []


def test_table_gaps_sees_a_renamed_module(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    for name in ("__init__", "_worker", "app"):
        (tmp_path / "pkg" / f"{name}.py").write_text("")
    assert table_gaps("| `pkg/` | `app`, `worker` |\n", tmp_path / "pkg") == ["_worker"]
    assert table_gaps("| `other/` | `app` |\n", tmp_path / "pkg") == ["no row"]
