"""The ``contextwindow`` command line.

Each sub-module adds its commands with ``register(app)``; model-side commands import torch only
inside their function bodies, so ``contextwindow count`` stays fast and torch-free.
"""

from __future__ import annotations

import importlib
import sys

import typer

from ..errors import ContextWindowError
from .options import err_console

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Keep LLM conversations and generations inside their token limits.",
)

_COMMAND_MODULES = ("text", "cache", "chat", "serve", "demo", "rope", "stream", "recall", "evict")

for _name in _COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; library errors become one red line and exit code 2, never a traceback.

    Usage errors (bad options) are reported by typer itself, also with exit code 2.
    """
    try:
        app(args=argv, prog_name="contextwindow")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ContextWindowError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    return 0


def entry_point() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    sys.exit(main())
