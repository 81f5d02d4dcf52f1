"""RoPE-scaling commands: ``contextwindow rope`` (perplexity by position) and ``contextwindow passkey``.

torch, transformers and matplotlib are imported inside the command bodies only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ConfigError

console = Console()
err_console = Console(stderr=True)


def _parse_lengths(value: str) -> list[int]:
    try:
        lengths = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--lengths must be comma-separated integers, got {value!r}") from None
    if not lengths or any(n < 2 for n in lengths):
        raise ConfigError(f"--lengths must be integers >= 2, got {value!r}")
    return lengths


def _parse_methods(value: str, factor: float) -> list[str]:
    from ..rope import RESTORE_METHODS, _check_factor, get_method

    methods = [m.strip() for m in value.split(",") if m.strip()]
    if not methods:
        raise ConfigError("--methods is empty")
    for m in methods:
        if m not in RESTORE_METHODS:
            get_method(m)  # ConfigError listing the known methods
            _check_factor(m, factor)
    return methods


def _apply(model: Any, method: str, factor: float) -> dict[str, Any]:
    from ..rope import RESTORE_METHODS, scale_rope

    if method in RESTORE_METHODS:
        return scale_rope(model, "none")
    return scale_rope(model, method, factor)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def plot_perplexity(
    series: dict[str, tuple[list[int], list[float]]],
    path: Path | str,
    *,
    title: str = "",
    trained: int | None = None,
) -> Path:
    """Line plot of perplexity per position bucket, one line per method (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    end = 0.0
    for method, (starts, ppl) in series.items():
        if not starts:
            continue
        width = starts[1] - starts[0] if len(starts) > 1 else 2 * (starts[0] or 1)
        mids = [(s + width / 2) / 1000 for s in starts]
        end = max(end, (starts[-1] + width) / 1000)
        ax.plot(mids, ppl, marker="o", label=method)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
    if trained and trained / 1000 < end:
        ax.axvline(trained / 1000, color="grey", linestyle="--", linewidth=1)
        ax.text(trained / 1000, ax.get_ylim()[1], " trained length", va="top", fontsize=8, color="grey")
    ax.set_xlabel("position (k tokens, bucket centre)")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_passkey(
    accuracy: dict[str, dict[int, float]],
    path: Path | str,
    *,
    title: str = "",
    counts: dict[str, dict[int, tuple[int, int]]] | None = None,
) -> Path:
    """Heat map of passkey accuracy: methods (rows) x lengths (columns); ``counts`` (correct,
    trials) per cell, when given, is printed in each cell; missing cells stay blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(accuracy)
    lengths = sorted({L for cells in accuracy.values() for L in cells})
    grid = [[accuracy[m].get(L, float("nan")) for L in lengths] for m in methods]
    fig, ax = plt.subplots(figsize=(1.4 * len(lengths) + 2.5, 0.6 * len(methods) + 1.6), dpi=110)
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(L) for L in lengths])
    ax.set_yticks(range(len(methods)), methods)
    ax.set_xlabel("prompt length (tokens)")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v == v:  # not NaN
                label = f"{v:.0%}"
                if counts and lengths[j] in counts.get(methods[i], {}):
                    k, n = counts[methods[i]][lengths[j]]
                    label += f"\n{k}/{n}"
                ax.text(j, i, label, ha="center", va="center", fontsize=9)
            else:
                ax.text(j, i, "not run", ha="center", va="center", fontsize=8, color="grey")
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def rope_command(
    text: Path = typer.Option(..., "--text", exists=True, dir_okay=False, help="UTF-8 text file to score."),
    lengths: str = typer.Option("4096,8192", help="Comma-separated sequence lengths (tokens)."),
    methods: str = typer.Option("none,linear,ntk,dynamic,yarn", help="Comma-separated RoPE methods."),
    factor: float = typer.Option(2.0, help="Context-extension factor (> 1)."),
    bucket: int = typer.Option(2048, help="Positions per perplexity bucket."),
    model_path: str = typer.Option(None, "--model", help="Local model directory (default SmolLM2-135M)."),
    plot: Path = typer.Option(None, help="Write a perplexity-by-position plot (PNG) here."),
    json_out: Path = typer.Option(None, "--json", help="Write all results as JSON here."),
    threads: int = typer.Option(0, help="torch CPU threads (0 = torch's default)."),
) -> None:
    """Perplexity per position bucket past the trained length, for each RoPE scaling method."""
    length_list = _parse_lengths(lengths)
    method_list = _parse_methods(methods, factor)
    if bucket < 1:
        raise ConfigError(f"--bucket must be >= 1, got {bucket}")
    body = text.read_text(encoding="utf-8")

    import torch

    from ..evaluate.positions import check_memory, perplexity_by_position
    from ..models import load_model

    if threads:
        torch.set_num_threads(threads)
    model, tokenizer = load_model(model_path)
    check_memory(model, max(length_list))  # fail before any work
    trained = int(model.config.max_position_embeddings)
    results: dict[str, dict[int, Any]] = {m: {} for m in method_list}
    with _progress() as progress:
        task = progress.add_task("perplexity", total=len(method_list) * len(length_list))
        for method in method_list:
            _apply(model, method, factor)
            for length in length_list:
                progress.update(task, description=f"{method} @ {length}")
                results[method][length] = perplexity_by_position(model, tokenizer, body, length, bucket)
                progress.advance(task)
    _apply(model, "none", factor)

    table = Table(title=f"Perplexity by length (factor {factor:g}, trained {trained})")
    table.add_column("method")
    for length in length_list:
        table.add_column(str(length), justify="right")
    for method in method_list:
        table.add_row(method, *(f"{results[method][L].overall_ppl:.2f}" for L in length_list))
    console.print(table)

    longest = max(length_list)
    first = results[method_list[0]][longest]
    btable = Table(title=f"Perplexity per {bucket}-token bucket at {longest} tokens")
    btable.add_column("method")
    for s in first.starts:
        btable.add_column(f"{s // 1000 if s % 1000 == 0 else s}-{min(s + bucket, longest)}", justify="right")
    for method in method_list:
        btable.add_row(method, *(f"{p:.1f}" for p in results[method][longest].ppl))
    console.print(btable)

    if plot:
        plot_perplexity(
            {m: (list(results[m][longest].starts), list(results[m][longest].ppl)) for m in method_list},
            plot,
            title=f"{text.name}: {longest} tokens, factor {factor:g}",
            trained=trained,
        )
        err_console.print(f"plot written to {plot}")
    if json_out:
        data = {m: {str(L): r.as_dict() for L, r in per.items()} for m, per in results.items()}
        json_out.write_text(json.dumps({"factor": factor, "trained": trained, "results": data}, indent=1))


def passkey_command(
    lengths: str = typer.Option("4096,8192", help="Comma-separated prompt lengths (tokens)."),
    methods: str = typer.Option("none,linear,ntk,dynamic,yarn", help="Comma-separated RoPE methods."),
    factor: float = typer.Option(2.0, help="Context-extension factor (> 1)."),
    trials: int = typer.Option(10, help="Random keys per (method, length)."),
    depth: float = typer.Option(0.5, help="Where the key sits in the filler (0 = start, 1 = end)."),
    seed: int = typer.Option(0, help="Seed for the random keys."),
    model_path: str = typer.Option(None, "--model", help="Local model directory (default SmolLM2-135M)."),
    plot: Path = typer.Option(None, help="Write an accuracy heat map (PNG) here."),
    json_out: Path = typer.Option(None, "--json", help="Write all results as JSON here."),
    threads: int = typer.Option(0, help="torch CPU threads (0 = torch's default)."),
) -> None:
    """Passkey retrieval accuracy (a 5-digit key hidden in filler) per RoPE method and length."""
    length_list = _parse_lengths(lengths)
    method_list = _parse_methods(methods, factor)
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if not 0.0 <= depth <= 1.0:
        raise ConfigError(f"--depth must be between 0 and 1, got {depth}")

    import torch

    from ..evaluate.positions import check_memory, passkey_retrieval
    from ..models import load_model

    if threads:
        torch.set_num_threads(threads)
    model, tokenizer = load_model(model_path)
    check_memory(model, max(length_list), prefill_chunk=2048)
    results: dict[str, dict[int, Any]] = {m: {} for m in method_list}
    with _progress() as progress:
        task = progress.add_task("passkey", total=len(method_list) * len(length_list) * trials)
        for method in method_list:
            _apply(model, method, factor)
            for length in length_list:
                progress.update(task, description=f"{method} @ {length}")
                results[method][length] = passkey_retrieval(
                    model,
                    tokenizer,
                    length,
                    depth,
                    trials,
                    seed=seed,
                    progress=lambda done, total: progress.advance(task),
                )
    _apply(model, "none", factor)

    table = Table(title=f"Passkey accuracy: depth {depth:g}, {trials} trials, factor {factor:g}", min_width=50)
    table.add_column("method")
    for length in length_list:
        table.add_column(str(length), justify="right")
    for method in method_list:
        table.add_row(method, *(f"{results[method][L].accuracy:.0%}" for L in length_list))
    console.print(table)
    if plot:
        plot_passkey(
            {m: {L: r.accuracy for L, r in per.items()} for m, per in results.items()},
            plot,
            title=f"Passkey accuracy (depth {depth:g}, {trials} trials, factor {factor:g})",
            counts={m: {L: (r.correct, r.trials) for L, r in per.items()} for m, per in results.items()},
        )
        err_console.print(f"plot written to {plot}")
    if json_out:
        data = {m: {str(L): r.as_dict() for L, r in per.items()} for m, per in results.items()}
        json_out.write_text(json.dumps({"factor": factor, "depth": depth, "results": data}, indent=1))


def register(app: typer.Typer) -> None:
    """Add ``rope`` and ``passkey`` to the app."""
    app.command("rope")(rope_command)
    app.command("passkey")(passkey_command)
