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

from ..errors import ConfigError

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
    min=0, help="CPU threads for the model (default or 0: one per core). Use 1 "
    "when other processes share the cores: oversubscribed threads are much slower.")]

#: What decodes for ``chat`` and ``serve`` (the fit, memories and sessions are the same on both).
ENGINES = ("transformers", "llama.cpp")
EngineOption = Annotated[str, typer.Option(
    help="What runs the model: transformers (every option; the attention-sink cache) or "
    "llama.cpp (the llamacpp extra: the GGUF's quantised kernels, faster on CPU; the same fit, "
    "memories and sessions; a dense KV cache; docs/serve.md).")]
#: What the llama.cpp engine cannot honour, by the option that asks for it (given, not
#: defaulted: an unset option is None), and why.
LLAMACPP_REFUSES = {
    "device": ("--device", ("it runs the GGUF on the CPU (this llama.cpp build has no GPU"
               " backend)")),
    "dtype": ("--dtype", "it computes with the GGUF's own quantised weights"),
    "sink_cache": ("--sink-cache", ("its KV cache is dense (prompt and reply share --context);"
                   " the attention-sink cache is the transformers engine's")),
    "sinks": ("--sinks", "it has no attention-sink cache"),
    "prefix_cache_mb": ("--prefix-cache-mb", ("it keeps the previous request's KV cache and"
                        " reuses the common prefix by itself; the multi-request prefix cache"
                        " is the transformers engine's")),
}
#: Values of those options that ask for what llama.cpp does anyway (``--no-sink-cache``).
_LLAMACPP_DOES: dict[str, Any] = {"sink_cache": False}


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
                   message: str = "loading the model...", engine: str = "transformers",
                   **options: Any) -> Any:
    """The ``engine`` (:data:`ENGINES`) for ``model`` on ``threads`` CPU threads, behind a
    ``message`` spinner on ``status`` (None: no spinner): a
    :class:`~contextwindow.generation.Generator` (see its ``load`` for ``options``) or a
    :class:`~contextwindow.generation.LlamaCppGenerator`. An option of
    :data:`LLAMACPP_REFUSES` set to None takes the engine's default; one llama.cpp cannot
    honour is refused (:func:`check_llamacpp`)."""
    from ..generation import Generator, LlamaCppGenerator

    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    # None here is "the engine's default" (elsewhere it means something: cache_policy=None)
    given = {name: value for name, value in options.items()
             if value is not None or name not in LLAMACPP_REFUSES}
    quiet_transformers(threads)
    if engine == "llama.cpp":
        check_llamacpp(device=device, dtype=dtype, **given)
        for name in _LLAMACPP_DOES:
            given.pop(name, None)
        with status.status(message) if status is not None else contextlib.nullcontext():
            return LlamaCppGenerator.load(model, threads=threads, **given)
    with status.status(message) if status is not None else contextlib.nullcontext():
        return Generator.load(model, device=device, dtype=dtype, **given)


def check_llamacpp(**options: Any) -> None:
    """Refuse, naming the option, what ``--engine llama.cpp`` cannot honour
    (:data:`LLAMACPP_REFUSES`), rather than ignore it."""
    for name, (flag, why) in LLAMACPP_REFUSES.items():
        value = options.get(name)
        if value is not None and not (name in _LLAMACPP_DOES and value == _LLAMACPP_DOES[name]):
            raise ConfigError(f"--engine llama.cpp cannot honour {flag}: {why}; use "
                              "--engine transformers")


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
