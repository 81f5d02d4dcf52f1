"""RoPE-scaling commands: ``contextwindow rope`` (perplexity by position) and ``contextwindow passkey``.

torch, transformers and matplotlib are imported inside the command bodies only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ConfigError

console = Console()
err_console = Console(stderr=True)

# Options ``rope`` and ``passkey`` share.
MethodsOption = Annotated[str, typer.Option(help="Comma-separated RoPE methods.")]
FactorOption = Annotated[float, typer.Option(help="Context-extension factor (> 1).")]
ModelOption = Annotated[Optional[str], typer.Option(
    "--model", help="Local model directory (default SmolLM2-135M).")]
JsonOption = Annotated[Optional[Path], typer.Option(
    "--json", help="Write all results as JSON here.")]
ThreadsOption = Annotated[int, typer.Option(help="torch CPU threads (0 = torch's default).")]
DEFAULT_METHODS = "none,linear,ntk,dynamic,yarn"


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


def _load(model_path: str | None, threads: int) -> tuple[Any, Any]:
    """Set torch's CPU threads (0 keeps its default), then load ``(model, tokenizer)``."""
    import torch

    from ..models import load_model

    if threads:
        torch.set_num_threads(threads)
    return load_model(model_path)


def _sweep(model: Any, methods: list[str], lengths: list[int], factor: float
           ) -> Iterator[tuple[str, int]]:
    """Every ``(method, length)`` in turn, with the model's RoPE scaled for ``method`` while
    its lengths run; plain RoPE is restored once the sweep is done."""
    for method in methods:
        _apply(model, method, factor)
        for length in lengths:
            yield method, length
    _apply(model, "none", factor)


def _length_table(title: str, results: dict[str, dict[int, Any]], methods: list[str],
                  lengths: list[int], cell: Callable[[Any], str], **options: Any) -> Table:
    """Methods (rows) x lengths (columns), each cell ``cell(result)``."""
    table = Table(title=title, **options)
    table.add_column("method")
    for length in lengths:
        table.add_column(str(length), justify="right")
    for method in methods:
        table.add_row(method, *(cell(results[method][L]) for L in lengths))
    return table


def _write_json(path: Path, results: dict[str, dict[int, Any]], **header: Any) -> None:
    """``header`` fields, then every result's ``as_dict()`` keyed by method and length."""
    data = {m: {str(L): r.as_dict() for L, r in per.items()} for m, per in results.items()}
    path.write_text(json.dumps({**header, "results": data}, indent=1))


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
    text: Annotated[Path, typer.Option(
        "--text", exists=True, dir_okay=False, help="UTF-8 text file to score.")],
    lengths: Annotated[str, typer.Option(
        help="Comma-separated sequence lengths (tokens).")] = "4096,8192",
    methods: MethodsOption = DEFAULT_METHODS,
    factor: FactorOption = 2.0,
    bucket: Annotated[int, typer.Option(help="Positions per perplexity bucket.")] = 2048,
    model_path: ModelOption = None,
    plot: Annotated[Optional[Path], typer.Option(
        help="Write a perplexity-by-position plot (PNG) here.")] = None,
    json_out: JsonOption = None,
    threads: ThreadsOption = 0,
) -> None:
    """Perplexity per position bucket past the trained length, for each RoPE scaling method."""
    length_list = _parse_lengths(lengths)
    method_list = _parse_methods(methods, factor)
    if bucket < 1:
        raise ConfigError(f"--bucket must be >= 1, got {bucket}")
    body = text.read_text(encoding="utf-8")

    from ..evaluate.positions import check_memory, perplexity_by_position

    model, tokenizer = _load(model_path, threads)
    check_memory(model, max(length_list))  # fail before any work
    trained = int(model.config.max_position_embeddings)
    results: dict[str, dict[int, Any]] = {m: {} for m in method_list}
    with _progress() as progress:
        task = progress.add_task("perplexity", total=len(method_list) * len(length_list))
        for method, length in _sweep(model, method_list, length_list, factor):
            progress.update(task, description=f"{method} @ {length}")
            results[method][length] = perplexity_by_position(model, tokenizer, body, length, bucket)
            progress.advance(task)

    console.print(_length_table(f"Perplexity by length (factor {factor:g}, trained {trained})",
                                results, method_list, length_list,
                                lambda r: f"{r.overall_ppl:.2f}"))

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
        _write_json(json_out, results, factor=factor, trained=trained)


def passkey_command(
    lengths: Annotated[str, typer.Option(
        help="Comma-separated prompt lengths (tokens).")] = "4096,8192",
    methods: MethodsOption = DEFAULT_METHODS,
    factor: FactorOption = 2.0,
    trials: Annotated[int, typer.Option(help="Random keys per (method, length).")] = 10,
    depth: Annotated[float, typer.Option(
        help="Where the key sits in the filler (0 = start, 1 = end).")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed for the random keys.")] = 0,
    model_path: ModelOption = None,
    plot: Annotated[Optional[Path], typer.Option(
        help="Write an accuracy heat map (PNG) here.")] = None,
    json_out: JsonOption = None,
    threads: ThreadsOption = 0,
) -> None:
    """Passkey retrieval accuracy (a 5-digit key hidden in filler) per RoPE method and length."""
    length_list = _parse_lengths(lengths)
    method_list = _parse_methods(methods, factor)
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if not 0.0 <= depth <= 1.0:
        raise ConfigError(f"--depth must be between 0 and 1, got {depth}")

    from ..evaluate.positions import check_memory, passkey_retrieval

    model, tokenizer = _load(model_path, threads)
    check_memory(model, max(length_list), prefill_chunk=2048)
    results: dict[str, dict[int, Any]] = {m: {} for m in method_list}
    with _progress() as progress:
        task = progress.add_task("passkey", total=len(method_list) * len(length_list) * trials)
        for method, length in _sweep(model, method_list, length_list, factor):
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

    console.print(_length_table(
        f"Passkey accuracy: depth {depth:g}, {trials} trials, factor {factor:g}", results,
        method_list, length_list, lambda r: f"{r.accuracy:.0%}", min_width=50))
    if plot:
        plot_passkey(
            {m: {L: r.accuracy for L, r in per.items()} for m, per in results.items()},
            plot,
            title=f"Passkey accuracy (depth {depth:g}, {trials} trials, factor {factor:g})",
            counts={m: {L: (r.correct, r.trials) for L, r in per.items()} for m, per in results.items()},
        )
        err_console.print(f"plot written to {plot}")
    if json_out:
        _write_json(json_out, results, factor=factor, depth=depth)


def register(app: typer.Typer) -> None:
    """Add ``rope`` and ``passkey`` to the app."""
    app.command("rope")(rope_command)
    app.command("passkey")(passkey_command)
