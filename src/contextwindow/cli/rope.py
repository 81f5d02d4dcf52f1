"""RoPE-scaling commands: ``contextwindow rope`` (perplexity by position) and ``passkey``.

torch and transformers are imported inside the command bodies only; the tables and plots come
from :mod:`contextwindow.evaluate.report`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ConfigError
from .options import (
    DeviceOption,
    DtypeOption,
    ModelOption,
    ThreadsOption,
    aliased,
    console,
    err_console,
    progress_bar,
    set_threads,
)

# Options ``rope`` and ``passkey`` share.
MethodsOption = Annotated[str, typer.Option(
    help="Comma-separated RoPE methods (self-extend, self-extend-dynamic and dca remap "
         "positions in attention).")]
FactorOption = Annotated[float, typer.Option(help="Context-extension factor (> 1).")]
JsonOption = Annotated[Path | None, typer.Option(
    "--json-out", help="Write all results as JSON to this file (--json, elsewhere a flag, "
    "prints JSON on stdout).")]
# Earlier releases spelled --json-out as --json PATH; kept hidden for one release.
JsonPathAlias = Annotated[Path | None, typer.Option("--json", hidden=True)]
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
    from ..rope import RESTORE_METHODS, check_factor, get_extension, get_method

    methods = [m.strip() for m in value.split(",") if m.strip()]
    if not methods:
        raise ConfigError("--methods is empty")
    for m in methods:
        if m not in RESTORE_METHODS:
            if get_extension(m) is None:  # self-extend, dca: attention-side
                get_method(m)  # ConfigError listing the known methods
            check_factor(m, factor)
    return methods


def _apply(model: Any, method: str, factor: float) -> dict[str, Any]:
    from ..rope import RESTORE_METHODS, scale_rope

    if method in RESTORE_METHODS:
        return scale_rope(model, "none")
    return scale_rope(model, method, factor)


def _load(model_path: str | None, threads: int | None, device: str | None = None,
          dtype: str | None = None) -> tuple[Any, Any]:
    """Set torch's CPU threads (None or 0 keeps its default), then load ``(model, tokenizer)``."""
    from ..models import load_model

    set_threads(threads)
    return load_model(model_path, device=device, dtype=dtype)


def _sweep(model: Any, methods: list[str], lengths: list[int], factor: float
           ) -> Iterator[tuple[str, int]]:
    """Every ``(method, length)`` in turn, with the model's RoPE scaled for ``method`` while
    its lengths run; plain RoPE is restored once the sweep is done."""
    for method in methods:
        _apply(model, method, factor)
        for length in lengths:
            yield method, length
    _apply(model, "none", factor)


def _write_json(path: Path, results: dict[str, dict[int, Any]], **header: Any) -> None:
    """``header`` fields, then every result's ``as_dict()`` keyed by method and length."""
    data = {m: {str(L): r.as_dict() for L, r in per.items()} for m, per in results.items()}
    path.write_text(json.dumps({**header, "results": data}, indent=1))


def rope_command(
    text: Annotated[Path, typer.Option(
        "--text", exists=True, dir_okay=False, help="UTF-8 text file to score.")],
    lengths: Annotated[str, typer.Option(
        help="Comma-separated sequence lengths (tokens).")] = "4096,8192",
    methods: MethodsOption = DEFAULT_METHODS,
    factor: FactorOption = 2.0,
    bucket: Annotated[int, typer.Option(help="Positions per perplexity bucket.")] = 2048,
    model_path: ModelOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    plot: Annotated[Path | None, typer.Option(
        help="Write a perplexity-by-position plot (PNG) here.")] = None,
    json_out: JsonOption = None,
    json_alias: JsonPathAlias = None,
    threads: ThreadsOption = None,
) -> None:
    """Perplexity per position bucket past the trained length, for each RoPE scaling method."""
    length_list = _parse_lengths(lengths)
    method_list = _parse_methods(methods, factor)
    if bucket < 1:
        raise ConfigError(f"--bucket must be >= 1, got {bucket}")
    body = text.read_text(encoding="utf-8")

    from ..evaluate.chunked import check_memory
    from ..evaluate.positions import perplexity_by_position
    from ..evaluate.report import bucket_table, length_table, plot_perplexity

    model, tokenizer = _load(model_path, threads, device, dtype)
    check_memory(model, max(length_list))  # fail before any work
    trained = int(model.config.max_position_embeddings)
    results: dict[str, dict[int, Any]] = {m: {} for m in method_list}
    with progress_bar() as progress:
        task = progress.add_task("perplexity", total=len(method_list) * len(length_list))
        for method, length in _sweep(model, method_list, length_list, factor):
            progress.update(task, description=f"{method} @ {length}")
            results[method][length] = perplexity_by_position(model, tokenizer, body, length,
                                                             bucket)
            progress.advance(task)

    console.print(length_table(f"Perplexity by length (factor {factor:g}, trained {trained})",
                               results, method_list, length_list,
                               lambda r: f"{r.overall_ppl:.2f}"))

    longest = max(length_list)
    console.print(bucket_table({m: results[m][longest] for m in method_list}, bucket, longest))

    if plot:
        plot_perplexity(
            {m: (list(results[m][longest].starts), list(results[m][longest].ppl))
             for m in method_list},
            plot,
            title=f"{text.name}: {longest} tokens, factor {factor:g}",
            trained=trained,
        )
        err_console.print(f"plot written to {plot}")
    json_out = aliased(json_out, json_alias)
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
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    plot: Annotated[Path | None, typer.Option(
        help="Write an accuracy heat map (PNG) here.")] = None,
    json_out: JsonOption = None,
    json_alias: JsonPathAlias = None,
    threads: ThreadsOption = None,
) -> None:
    """Passkey retrieval accuracy (a 5-digit key hidden in filler) per RoPE method and length."""
    length_list = _parse_lengths(lengths)
    method_list = _parse_methods(methods, factor)
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if not 0.0 <= depth <= 1.0:
        raise ConfigError(f"--depth must be between 0 and 1, got {depth}")

    from ..evaluate.chunked import check_memory
    from ..evaluate.passkey import passkey_retrieval
    from ..evaluate.report import length_table, plot_passkey

    model, tokenizer = _load(model_path, threads, device, dtype)
    check_memory(model, max(length_list), prefill_chunk=2048)
    results: dict[str, dict[int, Any]] = {m: {} for m in method_list}
    with progress_bar() as progress:
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

    console.print(length_table(
        f"Passkey accuracy: depth {depth:g}, {trials} trials, factor {factor:g}", results,
        method_list, length_list, lambda r: f"{r.accuracy:.0%}", min_width=50))
    if plot:
        plot_passkey(
            {m: {L: r.accuracy for L, r in per.items()} for m, per in results.items()},
            plot,
            title=f"Passkey accuracy (depth {depth:g}, {trials} trials, factor {factor:g})",
            counts={m: {L: (r.correct, r.trials) for L, r in per.items()}
                    for m, per in results.items()},
        )
        err_console.print(f"plot written to {plot}")
    json_out = aliased(json_out, json_alias)
    if json_out:
        _write_json(json_out, results, factor=factor, depth=depth)


def register(app: typer.Typer) -> None:
    """Add ``rope`` and ``passkey`` to the app."""
    app.command("rope")(rope_command)
    app.command("passkey")(passkey_command)
