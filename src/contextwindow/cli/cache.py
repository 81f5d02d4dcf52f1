"""``contextwindow cache-report``: what a prompt cache would save on a conversation, per policy.

Text side (no model, no torch): the conversation is replayed request by request through each
trimming policy (:mod:`contextwindow.caching`); ``--plot`` alone imports matplotlib.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TaskID
from rich.table import Table

from ..adapters import as_messages
from ..caching import CACHE_PRICE_RATIOS, TRIM_STRATEGIES, CacheReport, replay, trimmer
from ..errors import ConfigError, InvalidMessageError
from ..messages import check_conversation
from ..tokens import TokenCounter
from ..trim import DEFAULT_LOW_WATER
from .options import console, err_console, progress_bar


def read_conversation(path: Path) -> list:
    """A JSON list of messages, or an object with a ``messages`` list, checked."""
    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidMessageError(f"{path}: not a JSON conversation: {exc}") from None
    messages = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(messages, list):
        raise InvalidMessageError(f"{path}: expected a JSON list of messages or an object with "
                                  "a 'messages' list")
    conversation = as_messages(messages)
    check_conversation(conversation)
    return conversation


def report_table(reports: list[CacheReport], ratios: list[float]) -> Table:
    budget = reports[0].budget
    table = Table(title=f"{len(reports[0].requests)} requests, budget {budget} tokens")
    for column in ("policy", "prompt reused", "mean fill", "cuts", "prompt tokens",
                   *(f"billed at {r:g}" for r in ratios)):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for report in reports:
        billed = [(report.billed(r), report.billed(r) / max(1, report.prompt_tokens))
                  for r in ratios]
        table.add_row(report.policy, f"{100 * report.reuse:.1f}%",
                      f"{100 * report.mean_fill:.1f}%", str(report.cuts),
                      f"{report.prompt_tokens:,}",
                      *(f"{tokens:,.0f} ({100 * share:.0f}%)" for tokens, share in billed))
    return table


def replay_all(conversation: list, names: list[str], max_tokens: int, counter: TokenCounter,
               low_water: float) -> list[CacheReport]:
    """Each named policy's report, with a progress bar per policy on a terminal's stderr."""
    reports = []
    with progress_bar(transient=True, disable=not err_console.is_terminal) as bar:
        for name in names:
            task = bar.add_task(f"replaying {name}", total=len(conversation))
            def advance(k: int, task: TaskID = task) -> None:
                bar.update(task, completed=k)

            reports.append(replay(conversation, trimmer(name, max_tokens, counter,
                                                        low_water=low_water),
                                  counter, max_tokens, name=name, progress=advance))
    return reports


def cache_report(
    source: Annotated[Path, typer.Argument(help="A JSON conversation (list of messages).")],
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", "-n", min=1, help="Prompt-token budget.")] = 4000,
    model: Annotated[str, typer.Option(
        "--model", "-m", help="OpenAI model whose tokenizer and chat framing to use.")] = "gpt-4o",
    approximate: Annotated[bool, typer.Option(
        help="Count ~4 characters per token instead of the model's tokenizer.")] = False,
    strategy: Annotated[list[str] | None, typer.Option(
        help=f"Trimming strategies to compare ({', '.join(TRIM_STRATEGIES)}); repeatable "
        "(default: all).")] = None,
    policy: Annotated[list[str] | None, typer.Option("--policy", hidden=True)] = None,
    low_water: Annotated[float, typer.Option(
        min=0.01, max=1.0, help="The cache policy's low-water mark (fraction of the budget).")
    ] = DEFAULT_LOW_WATER,
    ratio: Annotated[list[float] | None, typer.Option(
        min=0.0, max=1.0, help="Cached-token price as a fraction of the uncached price; "
        "repeatable (default 0.5 and 0.1).")] = None,
    plot: Annotated[Path | None, typer.Option(
        help="Write a plot of cumulative billed tokens per request (PNG).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")
                       ] = False,
) -> None:
    """Replay a conversation request by request through each trimming strategy and report the
    prefix reuse, the mean context fill and the cost at cached-token prices."""
    # --policy: this option's name before the glossary (kept for one release).
    conversation = read_conversation(source)
    counter = TokenCounter.approximate() if approximate else TokenCounter.for_model(model)
    ratios = list(ratio or CACHE_PRICE_RATIOS)
    chosen = [*(strategy or ()), *(policy or ())] or list(TRIM_STRATEGIES)
    reports = replay_all(conversation, chosen, max_tokens, counter, low_water)
    if as_json:
        typer.echo(json.dumps({"source": str(source), "counter": counter.name,
                               "policies": [r.summary(ratios) for r in reports]}, indent=2))
    else:
        console.print(report_table(reports, ratios))
    if plot is not None:
        from ..evaluate.report import plot_cache_billed

        written = plot_cache_billed(reports, plot, ratios=ratios[-1:],
                                    title=f"{source.name}, budget {max_tokens} tokens")
        err_console.print(f"wrote {written}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``cache-report``."""
    app.command("cache-report")(cache_report)
