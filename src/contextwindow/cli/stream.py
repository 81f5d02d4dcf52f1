"""``contextwindow stream``: perplexity of a long text with dense, window and sink caches.

torch and transformers are imported inside the command body only; the table and the plot come
from :mod:`contextwindow.evaluate.report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ConfigError
from .options import DeviceOption, DtypeOption, ModelOption, console, progress_bar


def stream(
    text: Annotated[Path, typer.Option("--text", help="A UTF-8 text file to score.")],
    tokens: Annotated[int, typer.Option("--tokens", "-n", help="Score the first N tokens.")] = 4096,
    sinks: Annotated[int, typer.Option("--sinks", help="Attention-sink tokens kept.")] = 4,
    window: Annotated[int, typer.Option("--window", help="Recent tokens kept.")] = 1020,
    chunk: Annotated[int, typer.Option("--chunk", help="Tokens fed per forward pass.")] = 64,
    segment: Annotated[int, typer.Option("--segment", help="Segment size of the table.")] = 2048,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG plot here.")] = None,
    recompute: Annotated[
        bool,
        typer.Option(
            "--recompute", help="Add the sliding-window re-computation baseline (sampled)."
        ),
    ] = False,
    samples: Annotated[
        int, typer.Option("--samples", help="Re-computation blocks scored per segment.")
    ] = 4,
    policies: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help="Also stream through this KV eviction policy at the same budget "
            "(h2o, tova, snapkv; repeatable).",
        ),
    ] = None,
    model_name: ModelOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary, not a table.")
    ] = False,
) -> None:
    """Stream a long text through dense attention, a plain window and sinks + window.

    The plain window keeps the same number of tokens (sinks + window) but no sinks, so the two
    differ only by the sinks. Dense attention keeps everything, and breaks once positions pass
    the model's trained length.
    """
    if not text.is_file():
        raise ConfigError(f"no such file: {text}")
    if tokens < 2 or chunk < 1 or segment < 1 or samples < 1:
        raise ConfigError("--tokens must be >= 2 and --chunk, --segment, --samples >= 1")
    if recompute and segment < chunk:
        raise ConfigError(f"--segment ({segment}) must be >= --chunk ({chunk}) with --recompute")
    from ..kv import SinkCache, SinkPolicy

    SinkPolicy(sinks=sinks, window=window)  # bad sizes fail here, before the model loads
    from ..kv import POLICIES
    from ..kv import make_cache as policy_cache  # the loop below binds make_cache

    extra = [name for name in policies or [] if name != "sinks"]  # sinks + window always runs
    if unknown := [name for name in extra if name not in POLICIES]:
        raise ConfigError(f"unknown --policy {unknown}; choose from {', '.join(POLICIES)}")
    for name in extra:
        POLICIES[name](sinks + window, sinks)

    from ..evaluate.report import plot_streaming, segment_table
    from ..evaluate.streaming import encode_text, recompute_perplexity, streaming_perplexity
    from ..models import load_model

    model, tokenizer = load_model(model_name, device=device, dtype=dtype)
    ids = encode_text(tokenizer, text.read_text(encoding="utf-8"), tokens).tolist()
    budget = sinks + window
    runs: list[tuple[str, Any]] = [
        ("dense", None),
        (f"window 0+{budget}", lambda: SinkCache(model, sinks=0, window=budget)),
        (f"sinks {sinks}+{window}", lambda: SinkCache(model, sinks=sinks, window=window)),
    ]
    runs += [(f"{name} {budget}", lambda name=name: policy_cache(model, name, budget, sinks=sinks))
             for name in extra]
    results = []
    with progress_bar(transient=as_json) as progress:
        for label, make_cache in runs:
            task = progress.add_task(label, total=len(ids))
            results.append(
                streaming_perplexity(
                    model,
                    None,
                    ids,
                    cache=make_cache() if make_cache else None,
                    chunk=chunk,
                    label=label,
                    progress=lambda done, total, t=task: progress.update(
                        t, completed=done, total=total
                    ),
                )
            )
        if recompute:
            label = f"recompute {budget}"
            task = progress.add_task(label, total=None)
            results.append(
                recompute_perplexity(
                    model,
                    None,
                    ids,
                    window=budget,
                    stride=chunk,
                    segment=segment,
                    samples=samples,
                    label=label,
                    progress=lambda done, total, t=task: progress.update(
                        t, completed=done, total=total
                    ),
                )
            )

    trained = getattr(model.config, "max_position_embeddings", None)
    if plot is not None:
        plot_streaming(
            results,
            plot,
            trained_length=trained,
            title=f"{text.name}: {len(ids)} tokens, chunks of {chunk}",
        )
    if as_json:
        summary = {
            "tokens": len(ids),
            "trained_length": trained,
            "ppl": {res.label: round(res.ppl, 3) for res in results},
            "segments": {
                res.label: [
                    None if v is None else round(v, 3)
                    for v in res.segment_ppl(segment, total=len(ids))
                ]
                for res in results
            },
            "max_cache_tokens": {res.label: res.max_cache_tokens for res in results},
        }
        print(json.dumps(summary))
        return
    console.print(segment_table(results, segment, len(ids)))
    if trained:
        console.print(f"trained length: {trained} tokens; plain window and sinks keep {budget}.")
    if plot is not None:
        console.print(f"plot written to {plot}")


def register(app: typer.Typer) -> None:
    """Add the ``stream`` command to the app."""
    app.command("stream")(stream)
