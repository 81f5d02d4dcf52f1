"""``contextwindow serve``: an OpenAI-compatible server on the local model (see docs/serve.md)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from ..errors import ConfigError
from .options import ModelOption, ThreadsOption, quiet_transformers

POLICY_HELP = ("What to do with a conversation longer than the window: trim (keep the system "
               "prompt and the newest turns), sinks (also pin the first --keep-first messages, "
               "default 2) or none (reject with context_length_exceeded).")


def serve(
    model: ModelOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    context: Annotated[Optional[int], typer.Option(
        min=16, help="The window shared by prompt and reply (default: the model's trained "
        "length, times --rope-factor when scaled).")] = None,
    policy: Annotated[str, typer.Option(help=POLICY_HELP)] = "trim",
    keep_first: Annotated[Optional[int], typer.Option(
        min=0, help="Messages after the system prompt never trimmed (default 0; 2 for sinks).")] = None,
    sink_cache: Annotated[bool, typer.Option(
        help="Decode with the attention-sink KV cache (bounded memory; replies may outgrow the "
        "window). --no-sink-cache uses a dense cache.")] = True,
    sinks: Annotated[int, typer.Option(min=0, help="Tokens the sink cache never evicts.")] = 4,
    rope: Annotated[Optional[str], typer.Option(
        help="RoPE scaling method (linear, ntk, dynamic, yarn, llama3...).")] = None,
    rope_factor: Annotated[Optional[float], typer.Option(help="RoPE scaling factor, e.g. 2.")] = None,
    default_max_tokens: Annotated[int, typer.Option(
        min=1, help="Reply length when a request sets no max_tokens.")] = 512,
    max_queue: Annotated[int, typer.Option(
        min=1, help="Requests queued or running before new ones get 503.")] = 64,
    served_model_name: Annotated[Optional[str], typer.Option(
        help="The model id clients must send (default: the model's name).")] = None,
    threads: ThreadsOption = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve POST /v1/chat/completions (plain and streaming) and GET /v1/models."""
    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as exc:
        raise ConfigError(f"serve needs the serve extra ({exc}); "
                          "pip install 'contextwindow[serve]'") from None
    from ..generation import POLICIES, Generator
    from ..rope import RESTORE_METHODS

    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if (rope_factor is None) != (rope is None or rope in RESTORE_METHODS):
        raise ConfigError("--rope and --rope-factor go together")
    quiet_transformers(threads)
    console = Console(stderr=True, highlight=False)
    with console.status("loading the model..."):
        generator = Generator.load(model, rope=rope, rope_factor=rope_factor,
                                   model_id=served_model_name, context=context, policy=policy,
                                   keep_first=keep_first, sink_cache=sink_cache, sinks=sinks)
    app = create_app(generator, default_max_tokens=default_max_tokens, max_queue=max_queue)
    cache = (f"sink cache ({generator.sinks} sinks + {generator.context - generator.sinks} "
             "window)" if generator.sink_cache else "dense cache")
    scaled = f" · RoPE {rope} x{rope_factor:g}" if rope and rope_factor else ""
    console.print(
        f"[bold]{generator.model_id}[/] on http://{host}:{port}/v1 · window {generator.context} "
        f"tokens · policy {generator.policy} (keep_first {generator.keep_first}) · {cache}{scaled}")
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    """Add ``serve``."""
    app.command("serve")(serve)
