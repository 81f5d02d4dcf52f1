"""Options and helpers the command modules share, so no command imports from another one.

torch and transformers are imported inside the helpers that need them only: importing this
module keeps ``contextwindow count`` torch-free.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()
"""A command's result (tables, JSON) on stdout."""
err_console = Console(stderr=True, soft_wrap=True)
"""Progress, notes and errors on stderr, so stdout stays the result; a line is never
hard-wrapped (a log gets one error per line, whatever the width)."""

ModelOption = Annotated[str | None, typer.Option(
    "--model", "-m",
    help="A registered model (smollm2-135m, qwen2.5-0.5b, gemma3-270m; docs/models.md) or a "
    "local transformers model directory (default smollm2-135m).")]

ChatModelOption = Annotated[str | None, typer.Option(
    "--model", "-m",
    help="A registered model or a local transformers model directory (default qwen2.5-0.5b, "
    "the smallest registered model that answers from its prompt; docs/models.md).")]

DeviceOption = Annotated[str | None, typer.Option(
    help="Torch device of the model: cpu (default), cuda, cuda:1, mps...")]

DtypeOption = Annotated[str | None, typer.Option(
    help="float32, bfloat16 or float16 (default: the model's registered one, measured faster "
    "on CPU; float32 for a directory).")]

RecallTokensOption = Annotated[int | None, typer.Option(
    min=1, help="With --overflow recall: tokens of the budget for recalled turns "
    "(default half).")]
ThreadsOption = Annotated[int | None, typer.Option(
    min=0, help="CPU threads for the model (default or 0: torch's choice, one per core). Use 1 "
    "when other processes share the cores: oversubscribed threads are much slower.")]


# Spellings of earlier releases, kept hidden for one release (one vocabulary across commands:
# --store for where sessions live, --overflow for what a fit does past the budget).
StoreAlias = Annotated[str | None, typer.Option("--db", hidden=True)]
OverflowAlias = Annotated[str | None, typer.Option("--memory", hidden=True)]
PolicyAlias = Annotated[str | None, typer.Option("--policy", hidden=True)]


def aliased(value: Any, alias: Any) -> Any:
    """An option's value, or the value given under its old spelling (``alias``) instead."""
    return value if alias is None else alias


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch; ``None`` or 0 keeps torch's default."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def quiet_transformers(threads: int | None = None) -> None:
    """No per-load progress bars from transformers (the CLI shows its own status); and
    ``threads`` CPU threads for torch (see :func:`set_threads`)."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    set_threads(threads)


def load_generator(model: str | None, *, device: str | None, dtype: str | None,
                   threads: int | None, status: Console | None,
                   message: str = "loading the model...", **options: Any) -> Any:
    """A :class:`~contextwindow.generation.Generator` for ``model`` (see
    :meth:`~contextwindow.generation.Generator.load` for ``options``) on ``threads`` CPU
    threads, behind a ``message`` spinner on ``status`` (None: no spinner)."""
    from ..generation import Generator

    quiet_transformers(threads)
    with status.status(message) if status is not None else contextlib.nullcontext():
        return Generator.load(model, device=device, dtype=dtype, **options)


def progress_bar(*, transient: bool = False, disable: bool = False) -> Progress:
    """The progress bar of every long CLI job (on stderr): description, bar, done/total, time."""
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
        disable=disable,
    )


def memory_status(memory: Any, budget: int | None = None) -> dict[str, int]:
    """What a memory's view keeps: verbatim messages, tokens, pinned, dropped, summarized,
    recalled (older messages quoted in a recall block)."""
    status = memory.status()
    return {
        "kept": status.kept,
        "total": status.stored,
        "tokens": status.tokens,
        "budget": budget if budget is not None else status.budget or 0,
        "pinned": status.pinned,
        "summarized": status.summarized,
        "dropped": status.dropped,
        "recalled": status.recalled,
    }
