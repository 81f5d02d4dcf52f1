"""``contextwindow recall``: which memories keep facts planted early in a long conversation.

The local model (for the model summarizers) is loaded inside the command only; the table and
the plot come from :mod:`contextwindow.evaluate.report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import TaskID

from ..errors import ConfigError
from .options import ModelOption, ThreadsOption, console, progress_bar, set_threads


def recall(
    facts: Annotated[int, typer.Option("--facts", help="Facts to plant.")] = 8,
    turns: Annotated[int, typer.Option("--turns", help="User turns of the generated chat.")] = 60,
    seed: Annotated[int, typer.Option(
        "--seed", help="Seed for the chat, facts and planting.")] = 0,
    budget: Annotated[int, typer.Option(
        "--budget", "-b", help="Token budget of the bounded memories.")] = 1024,
    summary_tokens: Annotated[int | None, typer.Option(
        "--summary-tokens",
        help="max_summary_tokens of the summary memories (default budget/4).")] = None,
    window_k: Annotated[int, typer.Option("--window-k", help="Turns kept by WindowMemory.")] = 4,
    within: Annotated[float, typer.Option(
        "--within", help="Plant the facts in this leading fraction of the turns.")] = 0.25,
    no_model: Annotated[bool, typer.Option(
        "--no-model", help="Skip the local-model summarizers (fast, no torch).")] = False,
    model_name: ModelOption = None,
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", help="Length cap of each model summary.")] = 128,
    conversation: Annotated[Path | None, typer.Option(
        "--conversation",
        help="A JSON list of messages to plant the facts in, instead of a generated chat.")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write a bar chart (PNG) here.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the report as JSON, not a table.")] = False,
    threads: ThreadsOption = None,
) -> None:
    """Plant facts early in a long chat; count how many each memory keeps, and at what size.

    The facts are names, numbers, dates and codes; a fact counts when it survives verbatim in
    the memory's final context."""
    from ..evaluate.report import plot_recall, recall_table

    if facts < 1 or turns < 1:
        raise ConfigError("--facts and --turns must be >= 1")
    chat = _read_conversation(conversation) if conversation is not None else None
    summarizer = None
    if not no_model:
        from ..summarize import TransformersSummarizer

        set_threads(threads)
        summarizer = TransformersSummarizer(model_path=model_name, max_new_tokens=max_new_tokens)
    from ..evaluate.recall import default_memories
    from ..memory import default_counter

    memories = default_memories(budget, counter=default_counter(), model_summarizer=summarizer,
                                window_k=window_k, max_summary_tokens=summary_tokens)
    report = _run(memories, quiet=as_json, conversation=chat, n_facts=facts, turns=turns,
                  seed=seed, within=within, budget=budget)
    if plot is not None:
        plot_recall(report, plot)
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    console.print(recall_table(report))
    if plot is not None:
        console.print(f"plot written to {plot}")


def _read_conversation(path: Path) -> list[Any]:
    """The messages of a JSON file: a list of messages, or an object with a ``messages`` list."""
    from ..adapters import as_messages

    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not a JSON list of messages: {exc}") from None
    if isinstance(data, dict):
        data = data.get("messages")
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a JSON list of messages")
    return as_messages(data)


def _run(memories: dict[str, Any], *, quiet: bool, **options: Any) -> Any:
    """:func:`~contextwindow.evaluate.recall.fact_recall` with one progress bar per memory
    (none when ``quiet``)."""
    from ..evaluate.recall import fact_recall

    with progress_bar(transient=True, disable=quiet) as progress:
        tasks: dict[str, TaskID] = {}

        def report_progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        return fact_recall(memories, progress=report_progress, **options)


def register(app: typer.Typer) -> None:
    """Add the ``recall`` command to the app."""
    app.command("recall")(recall)
