"""Every ``--help`` reads as user text, and ``--version`` prints the installed version.

The commands are enumerated from the typer app, so a new command is checked without touching
this file. Help is rendered 200 columns wide: there, a paragraph the terminal wrapped fills its
lines, while a line break written into a docstring leaves a short line whose sentence goes on
at the start of the next line.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from itertools import pairwise

import pytest
import typer
import typer.rich_utils
from typer.core import TyperGroup
from typer.testing import CliRunner

import contextwindow
from contextwindow.cli import app, main

WIDTH = 200
SHORT = int(0.6 * WIDTH)  # a wrapped paragraph line is longer than this at WIDTH columns
RST = re.compile(r"``|:(?:class|func|meth|mod|data|attr|exc):")
DEVELOPER_WORDS = re.compile(r"\b(?:signature|typer)\b", re.IGNORECASE)
RUN = re.compile(r"\S+(?: \S+)*")  # a run of text; runs are separated by two or more spaces


def command_paths() -> list[tuple[str, ...]]:
    """The root and every (sub)command of the app, as argument prefixes."""
    paths: list[tuple[str, ...]] = [()]

    def walk(group: TyperGroup, prefix: tuple[str, ...]) -> None:
        for name, command in sorted(group.commands.items()):
            paths.append((*prefix, name))
            if isinstance(command, TyperGroup):
                walk(command, (*prefix, name))

    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    walk(root, ())
    return paths


def render_help(path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch,
                typer_app: typer.Typer = app) -> str:
    """``contextwindow PATH --help`` at WIDTH columns, without colour codes."""
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", WIDTH)
    monkeypatch.setattr(typer.rich_utils, "FORCE_TERMINAL", False)
    result = CliRunner().invoke(typer_app, [*path, "--help"], prog_name="contextwindow",
                                env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, result.output
    return result.output


def hard_breaks(text: str) -> list[str]:
    """Lines that end short of the width while their sentence goes on at the same column of the
    next line (a paragraph, or the same cell of a table): the next line starts neither a new
    sentence (a capital) nor typer's "[default: ...]" note."""
    bodies = [line.replace("│", " ").rstrip() for line in text.splitlines()]
    found = []
    for line, following in pairwise(bodies):
        runs, next_runs = list(RUN.finditer(line)), list(RUN.finditer(following))
        if not runs or not next_runs or len(line) >= SHORT:
            continue
        continued = next_runs[0].start() == runs[-1].start()
        start = next_runs[0].group()[0]
        if continued and not start.isupper() and start != "[":
            found.append(f"{line.strip()!r} / {following.strip()!r}")
    return found


def test_every_command_is_enumerated() -> None:
    paths = command_paths()
    assert {("count",), ("trim",), ("serve",), ("chat",), ("evict-sweep",)} <= set(paths)
    assert len(paths) == len(set(paths)) > 10


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "contextwindow")
def test_help_reads_as_user_text(path: tuple[str, ...], monkeypatch) -> None:
    text = render_help(path, monkeypatch)
    assert max(len(line) for line in text.splitlines()) == WIDTH  # rendered at the width asked
    problems = {"rst markup": RST.findall(text), "developer words": DEVELOPER_WORDS.findall(text),
                "hard line breaks": hard_breaks(text)}
    assert problems == {"rst markup": [], "developer words": [], "hard line breaks": []}


def test_hard_break_check_fails_on_a_wrapped_docstring(monkeypatch) -> None:
    """The check above can fail: a docstring paragraph kept as written is caught, the same
    paragraph on one line is not."""
    sentence = ("The whole prompt is streamed through the bounded cache before the question is "
                "answered, so a policy finds the key only if it kept it.")
    one_line = "Say hello.\n\n" + sentence
    wrapped = one_line.replace("answered, so ", "answered, so\n")
    probe = typer.Typer()

    @probe.command()
    def hello() -> None:
        pass

    for help_text, expected in ((wrapped, 1), (one_line, 0)):
        probe.registered_commands[0].help = help_text
        output = render_help((), monkeypatch, probe)
        assert len(hard_breaks(output)) == expected, output


def test_version_prints_the_installed_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"contextwindow {version('contextwindow')}\n"
    assert contextwindow.__version__ == version("contextwindow")
