"""``contextwindow stream``: perplexity of a long text with dense, window and sink caches.

torch and transformers are imported inside the functions only; the table and the plot come
from :mod:`contextwindow.evaluate.report`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from ..errors import ConfigError
from .options import (
    DeviceOption,
    DtypeOption,
    ModelOption,
    ThreadsOption,
    console,
    progress_bar,
    set_threads,
)

# The command's options, named so its signature stays one line per option.
TextOption = Annotated[Path, typer.Option("--text", help="A UTF-8 text file to score.")]
TokensOption = Annotated[int, typer.Option("--tokens", help="Score the first N tokens.")]
SinksOption = Annotated[int, typer.Option("--sinks", help="Attention-sink tokens kept.")]
WindowOption = Annotated[int, typer.Option("--window", help="Recent tokens kept.")]
ChunkOption = Annotated[int, typer.Option("--chunk", help="Tokens fed per forward pass.")]
SegmentOption = Annotated[int, typer.Option("--segment", help="Segment size of the table.")]
PlotOption = Annotated[Path | None, typer.Option("--plot", help="Write a PNG plot here.")]
RecomputeOption = Annotated[bool, typer.Option(
    "--recompute", help="Add the sliding-window re-computation baseline (sampled).")]
SamplesOption = Annotated[int, typer.Option(
    "--samples", help="Re-computation blocks scored per segment.")]
PolicyOption = Annotated[list[str] | None, typer.Option(
    "--policy", help="Also stream through this KV eviction policy at the same budget "
    "(h2o, tova, snapkv; repeatable).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON summary, not a table.")]


def stream(
    text: TextOption,
    tokens: TokensOption = 4096,
    sinks: SinksOption = 4,
    window: WindowOption = 1020,
    chunk: ChunkOption = 64,
    segment: SegmentOption = 2048,
    plot: PlotOption = None,
    recompute: RecomputeOption = False,
    samples: SamplesOption = 4,
    policies: PolicyOption = None,
    model_name: ModelOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    as_json: JsonOption = False,
    threads: ThreadsOption = None,
) -> None:
    """Stream a long text through dense attention, a plain window and sinks + window.

    The plain window keeps the same number of tokens (sinks + window) but no sinks, so the two
    differ only by the sinks. Dense attention keeps everything, and breaks once positions pass
    the model's trained length.
    """
    # One piece: one parameter per command-line option (typer reads the options from this
    # signature), so it is as long as the command's interface; the work is in the helpers below.
    _check_sizes(text, tokens=tokens, chunk=chunk, segment=segment, samples=samples,
                 recompute=recompute)
    extra = _check_policies(policies, sinks=sinks, window=window)
    from ..evaluate.report import plot_streaming
    from ..evaluate.streaming import encode_text
    from ..models import load_model

    set_threads(threads)
    model, tokenizer = load_model(model_name, device=device, dtype=dtype)
    ids = encode_text(tokenizer, text.read_text(encoding="utf-8"), tokens).tolist()
    budget = sinks + window
    with progress_bar(transient=as_json) as progress:
        results = [_stream_one(model, ids, label, make_cache, chunk=chunk, progress=progress)
                   for label, make_cache in _caches(model, sinks, window, extra)]
        if recompute:
            results.append(_recompute(model, ids, budget, chunk=chunk, segment=segment,
                                      samples=samples, progress=progress))
    trained = getattr(model.config, "max_position_embeddings", None)
    if plot is not None:
        plot_streaming(results, plot, trained_length=trained,
                       title=f"{text.name}: {len(ids)} tokens, chunks of {chunk}")
    if as_json:
        print(json.dumps(_summary(results, len(ids), trained, segment)))
        return
    _print_table(results, len(ids), segment=segment, trained=trained, budget=budget, plot=plot)


def _check_sizes(text: Path, *, tokens: int, chunk: int, segment: int, samples: int,
                 recompute: bool) -> None:
    """Refuse a missing text or bad sizes before the model loads."""
    if not text.is_file():
        raise ConfigError(f"no such file: {text}")
    if tokens < 2 or chunk < 1 or segment < 1 or samples < 1:
        raise ConfigError("--tokens must be >= 2 and --chunk, --segment, --samples >= 1")
    if recompute and segment < chunk:
        raise ConfigError(f"--segment ({segment}) must be >= --chunk ({chunk}) with --recompute")


def _check_policies(policies: list[str] | None, *, sinks: int, window: int) -> list[str]:
    """The ``--policy`` names besides sinks + window (which always runs), checked with their
    sizes before the model loads."""
    from ..kv import EVICTION_POLICIES, SinkPolicy

    SinkPolicy(sinks=sinks, window=window)
    extra = [name for name in policies or [] if name != "sinks"]
    if unknown := [name for name in extra if name not in EVICTION_POLICIES]:
        raise ConfigError(f"unknown --policy {unknown}; "
                          f"choose from {', '.join(EVICTION_POLICIES)}")
    for name in extra:
        EVICTION_POLICIES[name](sinks + window, sinks)
    return extra


def _caches(model: Any, sinks: int, window: int, extra: list[str]) -> list[tuple[str, Any]]:
    """(label, cache factory) of every streamed run: dense (no factory), the plain window and
    sinks + window of the same size, then each extra policy at that size."""
    from ..kv import SinkCache, make_cache

    budget = sinks + window
    runs: list[tuple[str, Any]] = [
        ("dense", None),
        (f"window 0+{budget}", lambda: SinkCache(model, sinks=0, window=budget)),
        (f"sinks {sinks}+{window}", lambda: SinkCache(model, sinks=sinks, window=window)),
    ]
    runs += [(f"{name} {budget}", lambda name=name: make_cache(model, name, budget, sinks=sinks))
             for name in extra]
    return runs


def _track(progress: Progress, label: str, total: int | None) -> Callable[[int, int], None]:
    """A new ``label`` task on ``progress`` and the callback that moves it."""
    task = progress.add_task(label, total=total)
    return lambda done, now: progress.update(task, completed=done, total=now)


def _stream_one(model: Any, ids: list[int], label: str, make_cache: Any, *, chunk: int,
                progress: Progress) -> Any:
    """Streaming perplexity of ``ids`` through a fresh cache (dense when ``make_cache`` is None)."""
    from ..evaluate.streaming import streaming_perplexity

    return streaming_perplexity(model, None, ids, cache=make_cache() if make_cache else None,
                                chunk=chunk, label=label,
                                progress=_track(progress, label, len(ids)))


def _recompute(model: Any, ids: list[int], budget: int, *, chunk: int, segment: int,
               samples: int, progress: Progress) -> Any:
    """The sliding-window re-computation baseline over ``budget`` tokens (sampled)."""
    from ..evaluate.streaming import recompute_perplexity

    label = f"recompute {budget}"
    return recompute_perplexity(model, None, ids, window=budget, stride=chunk, segment=segment,
                                samples=samples, label=label,
                                progress=_track(progress, label, None))


def _summary(results: list[Any], n_tokens: int, trained: int | None,
             segment: int) -> dict[str, Any]:
    """The ``--json`` summary: perplexity overall and per segment, and the cache peak."""
    return {
        "tokens": n_tokens,
        "trained_length": trained,
        "ppl": {res.label: round(res.ppl, 3) for res in results},
        "segments": {
            res.label: [None if v is None else round(v, 3)
                        for v in res.segment_ppl(segment, total=n_tokens)]
            for res in results
        },
        "max_cache_tokens": {res.label: res.max_cache_tokens for res in results},
    }


def _print_table(results: list[Any], n_tokens: int, *, segment: int, trained: int | None,
                 budget: int, plot: Path | None) -> None:
    from ..evaluate.report import segment_table

    console.print(segment_table(results, segment, n_tokens))
    if trained:
        console.print(f"trained length: {trained} tokens; plain window and sinks keep {budget}.")
    if plot is not None:
        console.print(f"plot written to {plot}")


def register(app: typer.Typer) -> None:
    """Add the ``stream`` command to the app."""
    app.command("stream")(stream)
