"""``contextwindow evict-sweep``: passkey accuracy and perplexity of KV eviction per budget.

torch and transformers are imported inside the functions only; the plot comes from
:mod:`contextwindow.evaluate.report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import ConfigError
from .options import (
    DeviceOption,
    DtypeOption,
    ModelOption,
    ThreadsOption,
    console,
    progress_bar,
    quiet_transformers,
)


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{name} must be positive integers, got {text!r}")
    return values


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise ConfigError(f"{name} must be between 0 and 1, got {text!r}")
    return values


# The command's options, named so its signature stays one line per option.
PoliciesOption = Annotated[str, typer.Option(
    help="Comma-separated policies: sinks,h2o,tova,snapkv.")]
BudgetsOption = Annotated[str, typer.Option(
    help="Comma-separated KV budgets (tokens per layer).")]
LengthsOption = Annotated[str, typer.Option(help="Comma-separated passkey prompt lengths.")]
DepthsOption = Annotated[str, typer.Option(
    help="Comma-separated key depths (0 = start, 1 = end).")]
TrialsOption = Annotated[int, typer.Option(min=1, help="Keys per length and depth.")]
TextOption = Annotated[Path | None, typer.Option(
    help="A UTF-8 text for streaming perplexity (none: passkey only).")]
PplTokensOption = Annotated[int, typer.Option(min=2, help="Tokens of --text to score.")]
SinksOption = Annotated[int, typer.Option(min=0, help="Attention sinks every policy pins.")]
ChunkOption = Annotated[int, typer.Option(min=1, help="Prompt tokens per forward pass.")]
PositionsOption = Annotated[str, typer.Option(
    help="How the scored policies number kept tokens: slots (close the gaps, any stream "
    "length) or stream (true distances; the prompt must fit the trained length).")]
FullOption = Annotated[bool, typer.Option(help="Add the full cache as the ceiling.")]
PlotOption = Annotated[Path | None, typer.Option(
    help="Write the accuracy/perplexity plot here.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the results as JSON.")]


def evict_sweep(
    policies: PoliciesOption = "sinks,h2o,tova,snapkv",
    budgets: BudgetsOption = "128,256,512,1024,2048",
    lengths: LengthsOption = "4096",
    depths: DepthsOption = "0.5",
    trials: TrialsOption = 3,
    text: TextOption = None,
    ppl_tokens: PplTokensOption = 4096,
    sinks: SinksOption = 4,
    chunk: ChunkOption = 256,
    positions: PositionsOption = "slots",
    full: FullOption = True,
    plot: PlotOption = None,
    as_json: JsonOption = False,
    model_name: ModelOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Stream passkey prompts (and a text) through each eviction policy at each KV budget.

    The whole prompt is streamed through the bounded cache before the question is answered, so
    a policy finds the key only if it kept it. Accuracy and perplexity per policy and budget,
    with the full cache as the ceiling.
    """
    # One piece: one parameter per command-line option (typer reads the options from this
    # signature), so it is as long as the command's interface; the work is in the helpers below.
    names = _policy_names(policies)
    sizes, prompt_lengths = _ints(budgets, "--budgets"), _ints(lengths, "--lengths")
    where = _floats(depths, "--depths")
    _check_budgets(names, sizes, sinks)
    _check_positions(positions)
    if text is not None and not text.is_file():
        raise ConfigError(f"no such file: {text}")
    quiet_transformers(threads)
    from ..evaluate.needle import budget_sweep
    from ..evaluate.report import plot_budget_sweep
    from ..models import load_model

    model, tokenizer = load_model(model_name, device=device, dtype=dtype)
    runs = (len(names) * len(sizes) + full) * (
        len(prompt_lengths) * len(where) + (text is not None)
    )
    with progress_bar(transient=as_json) as progress:
        task = progress.add_task("eviction sweep", total=runs)
        sweep = budget_sweep(
            model, tokenizer, policies=names, budgets=sizes, lengths=prompt_lengths, depths=where,
            trials=trials, text=text.read_text(encoding="utf-8") if text else None,
            ppl_tokens=ppl_tokens, sinks=sinks, chunk=chunk, full=full, positions=positions,
            progress=lambda label: progress.update(task, advance=1, description=label[:22]),
        )
    if plot is not None:
        plot_budget_sweep(sweep, plot, title=f"{model.config.name_or_path.split('/')[-1]}")
    if as_json:
        print(json.dumps(sweep.as_dict()))
        return
    console.print(_table(sweep, names, sizes, full=full))
    if plot is not None:
        console.print(f"plot written to {plot}")


def _policy_names(policies: str) -> list[str]:
    """The ``--policies`` names, each a :data:`~contextwindow.kv.EVICTION_POLICIES` key."""
    from ..kv import EVICTION_POLICIES

    names = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = [p for p in names if p not in EVICTION_POLICIES]
    if unknown or not names:
        raise ConfigError(f"unknown policies {unknown}; "
                          f"choose from {', '.join(EVICTION_POLICIES)}")
    return names


def _check_positions(positions: str) -> None:
    """Refuse an unknown ``--positions`` before the model loads."""
    from ..kv import POSITIONS

    if positions not in POSITIONS:
        raise ConfigError(f"unknown --positions {positions!r}; choose from {', '.join(POSITIONS)}")


def _check_budgets(names: list[str], sizes: list[int], sinks: int) -> None:
    """Build every policy at every budget once, so bad budgets fail before the model loads."""
    from ..kv import EVICTION_POLICIES

    for name in names:
        for size in sizes:
            EVICTION_POLICIES[name](size, sinks)


def _table(sweep: Any, names: list[str], sizes: list[int], *, full: bool) -> Table:
    """Keys found (and perplexity, given a text) per policy (rows) and budget (columns)."""
    table = Table(title="Keys found (and perplexity) per KV budget")
    table.add_column("policy")
    for size in sizes:
        table.add_column(str(size), justify="right")
    for name in (["full"] if full else []) + names:
        cells = []
        for size in sizes:
            budget = None if name == "full" else size
            cell = f"{sweep.accuracy(name, budget):.0%}"
            if (name, budget) in sweep.perplexity:
                cell += f" / {sweep.perplexity[(name, budget)]:.1f}"
            cells.append(cell)
        table.add_row(name, *cells)
    return table


def register(app: typer.Typer) -> None:
    """Add the ``evict-sweep`` command to the app."""
    app.command("evict-sweep")(evict_sweep)
