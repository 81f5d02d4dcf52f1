"""The ``contextwindow`` command line.

Each sub-module adds its commands with ``register(app)``; model-side commands import torch only
inside their function bodies, so ``contextwindow count`` stays fast and torch-free.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Annotated

import typer
from rich.markup import escape

from .. import __version__
from ..errors import ContextWindowError, MissingExtraError
from .options import err_console

__all__ = ["app", "entry_point", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _print_version(value: bool) -> None:
    """``--version``: the installed package's version (read from its metadata)."""
    if value:
        typer.echo(f"contextwindow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(show_version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Keep LLM conversations and generations inside their token limits."""


def _user_help(doc: str) -> str:
    """A command's docstring as its ``--help``: each paragraph on one line, so the terminal
    wraps it (typer keeps a docstring's line breaks in the commands table and in every
    paragraph after the first, which reads as broken lines at any other width). Anything
    after a form feed is for developers, as click has it; it is left out."""
    paragraphs = inspect.cleandoc(doc).partition("\f")[0].split("\n\n")
    return "\n\n".join(" ".join(part.split()) for part in paragraphs if part.strip())


_COMMAND_MODULES = ("text", "cache", "chat", "serve", "demo", "rope", "stream", "recall", "evict")

for _name in _COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)
for _command in app.registered_commands:
    if _command.help is None and _command.callback is not None:
        _command.help = _user_help(_command.callback.__doc__ or "")


# The top-level modules of the model extra: a model-side command without them says which
# extra to install instead of showing a traceback.
MODEL_EXTRA_MODULES = frozenset({"torch", "transformers", "gguf", "accelerate", "safetensors",
                                 "matplotlib"})


def print_error(message: str) -> None:
    """One red ``error:`` line on stderr, the message printed literally (``[serve]`` stays)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; library errors become one red line and exit code 2, never a traceback.

    Usage errors (bad options) are reported by typer itself, also with exit code 2.
    """
    try:
        app(args=argv, prog_name="contextwindow")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ContextWindowError as exc:
        print_error(str(exc))
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in MODEL_EXTRA_MODULES:
            raise
        print_error(str(MissingExtraError("this command", "model", exc)))
        return 2
    return 0


def entry_point() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    sys.exit(main())
