"""``contextwindow serve``: an OpenAI-compatible server on the local model, or a context gateway
in front of any OpenAI-compatible server with ``--upstream`` (see docs/serve.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import ConfigError
from .options import (
    ChatModelOption,
    DeviceOption,
    DtypeOption,
    EngineOption,
    PolicyAlias,
    RecallTokensOption,
    ThreadsOption,
    aliased,
    load_generator,
)

POLICY_HELP = ("What to do with a conversation longer than the window: trim (keep the system "
               "prompt and the recent turns), sinks (also pin the first --keep-first messages, "
               "default 2), none (reject with context_length_exceeded) or, with --upstream, "
               "summary (trim, and put a summary of what was left out in its place; "
               "--summarizer) or recall (also quote older turns of the session that match "
               "the newest message; --recall-tokens).")
STORE_HELP = ("Where server-side sessions live (requests with X-Session-Id): redis://..., "
              "postgresql://..., sqlite:///PATH or a path, memory, or none (no sessions). "
              "Default: serve.sqlite3 in the user data directory.")


def default_store() -> Path:
    """The sessions database under the user data dir (``CONTEXTWINDOW_DATA`` overrides it)."""
    from platformdirs import user_data_dir

    root = Path(os.environ.get("CONTEXTWINDOW_DATA") or user_data_dir("contextwindow"))
    root.mkdir(parents=True, exist_ok=True)
    return root / "serve.sqlite3"


def _secret(var: str | None, what: str) -> str | None:
    """The value of environment variable ``var`` (a secret: only ever named, never shown)."""
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise ConfigError(f"{what}: the environment variable {var} is not set or empty")
    return value


def _gateway(url: str, *, model: str | None, context: int | None, key_env: str | None,
             **options: Any) -> Any:
    """The gateway's app (:func:`contextwindow.serve.create_gateway`), its upstream key read
    from the environment variable ``--upstream-key-env`` names."""
    from ..serve import create_gateway

    if not model or context is None:
        raise ConfigError("--upstream needs --upstream-model NAME and --upstream-context TOKENS")
    return create_gateway(url, model=model, context=context,
                          api_key=_secret(key_env, "--upstream-key-env"), **options)


# The command's options, named so its signature stays one line per option.
HostOption = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOption = Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")]
ContextOption = Annotated[int | None, typer.Option(
    min=16, help="The window shared by prompt and reply (default: the model's trained "
    "length, times --rope-factor when scaled).")]
PolicyOption = Annotated[str, typer.Option("--overflow", help=POLICY_HELP)]
KeepFirstOption = Annotated[int | None, typer.Option(
    min=0, help="Messages after the system prompt never trimmed (default 0; 2 for sinks).")]
SinkCacheOption = Annotated[bool | None, typer.Option(
    help="Decode with the attention-sink KV cache (bounded memory; replies may outgrow the "
    "window; the transformers engine's default). --no-sink-cache uses a dense cache.")]
SinksOption = Annotated[int | None, typer.Option(
    min=0, help="Tokens the sink cache never evicts (default 4).")]
PrefixCacheOption = Annotated[float | None, typer.Option(
    min=0.0, help="MiB of KV cache kept from recent requests, so a prompt that starts "
    "with one of them prefills only the rest (0: off; default 512; llama.cpp reuses the "
    "previous request's by itself).")]
RopeOption = Annotated[str | None, typer.Option(
    help="RoPE scaling method (linear, ntk, dynamic, yarn, llama3...), or self-extend / dca "
    "(attention-side; factor 4 unless --rope-factor).")]
RopeFactorOption = Annotated[float | None, typer.Option(help="RoPE scaling factor, e.g. 2.")]
DefaultMaxTokensOption = Annotated[int, typer.Option(
    min=1, help="Reply length when a request sets no max_tokens.")]
MaxQueueOption = Annotated[int, typer.Option(
    min=1, help="Requests queued or running before new ones get 503.")]
ServedModelOption = Annotated[str | None, typer.Option(
    help="The model id clients must send (default: the model's name).")]
UpstreamOption = Annotated[str | None, typer.Option(
    help="Forward to this OpenAI-compatible server (e.g. http://vllm:8000/v1) instead of "
    "running a local model.")]
UpstreamModelOption = Annotated[str | None, typer.Option(
    help="The model name the upstream serves.")]
UpstreamContextOption = Annotated[int | None, typer.Option(
    min=16, help="The upstream model's context window in tokens.")]
UpstreamKeyEnvOption = Annotated[str | None, typer.Option(
    help="Environment variable holding the upstream's API key.")]
CacheAwareOption = Annotated[bool, typer.Option(
    "--cache-aware/--no-cache-aware", " /--newest", help="Cut a long conversation back to 60% "
    "of the budget at once, then only append, so each prompt extends the previous one "
    "(prefix caches: the upstream's, or the local KV prefix cache); --no-cache-aware "
    "(--newest) keeps the newest turns that fit, shifting every turn.")]
SummarizerOption = Annotated[str, typer.Option(
    help="With --upstream and --overflow summary: who writes the summary, keyfacts (names, "
    "numbers, dates, codes, quotes verbatim; no model call) or upstream (the upstream model; "
    "key facts for a request whose summary call fails or times out).")]
SummaryTimeoutOption = Annotated[float, typer.Option(
    min=0.001, help="With --summarizer upstream: seconds one request may spend on summary "
    "calls before it falls back to key facts.")]
TokenizerOption = Annotated[str | None, typer.Option(
    help="What counts the upstream model's tokens with its chat template: its tokenizer "
    "directory, its .gguf file or a registered model name; default: tiktoken for the OpenAI "
    "model --upstream-model.")]
FlattenOption = Annotated[bool | None, typer.Option(
    "--flatten/--no-flatten", help="With --upstream: send developer messages as system and "
    "text-part lists as their joined text, as counted (llama.cpp needs it). Default: on with "
    "--tokenizer, off for OpenAI models.")]
StoreOption = Annotated[str | None, typer.Option(help=STORE_HELP)]
StoreNamespaceOption = Annotated[str | None, typer.Option(
    help="Redis key prefix / PostgreSQL schema, to keep apps apart in one server.")]
ApiKeyEnvOption = Annotated[str, typer.Option(
    help="Environment variable holding the key clients must send as 'Authorization: "
    "Bearer KEY' (unset: no key required).")]
AllowInsecureOption = Annotated[bool, typer.Option(
    help="Listen on a non-loopback address without an API key.")]
MaxBodyOption = Annotated[int, typer.Option(
    min=1024, help="Larger request bodies get 413 before they are parsed.")]
RequestTimeoutOption = Annotated[float, typer.Option(
    min=0.001, help="Seconds a request may take before the first byte of its answer.")]
LockTimeoutOption = Annotated[float, typer.Option(
    min=0.0, help="Seconds a session turn waits for the one before it (then 409).")]
LockTtlOption = Annotated[float, typer.Option(
    min=0.1, help="Redis only: seconds a session lock outlives a crashed holder.")]
LogLevelOption = Annotated[str, typer.Option(help="uvicorn log level.")]


def serve(
    model: ChatModelOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    context: ContextOption = None,
    policy: PolicyOption = "trim",
    keep_first: KeepFirstOption = None,
    recall_tokens: RecallTokensOption = None,
    sink_cache: SinkCacheOption = None,
    sinks: SinksOption = None,
    prefix_cache_mb: PrefixCacheOption = None,
    rope: RopeOption = None,
    rope_factor: RopeFactorOption = None,
    default_max_tokens: DefaultMaxTokensOption = 512,
    max_queue: MaxQueueOption = 64,
    served_model_name: ServedModelOption = None,
    upstream: UpstreamOption = None,
    upstream_model: UpstreamModelOption = None,
    upstream_context: UpstreamContextOption = None,
    upstream_key_env: UpstreamKeyEnvOption = None,
    tokenizer: TokenizerOption = None,
    flatten: FlattenOption = None,
    cache_aware: CacheAwareOption = True,
    summarizer: SummarizerOption = "keyfacts",
    summary_timeout: SummaryTimeoutOption = 30.0,
    store: StoreOption = None,
    store_namespace: StoreNamespaceOption = None,
    api_key_env: ApiKeyEnvOption = "CONTEXTWINDOW_API_KEY",
    allow_insecure: AllowInsecureOption = False,
    max_body_bytes: MaxBodyOption = 4 * 1024 * 1024,
    request_timeout: RequestTimeoutOption = 600.0,
    lock_timeout: LockTimeoutOption = 30.0,
    lock_ttl: LockTtlOption = 10.0,
    threads: ThreadsOption = None,
    engine: EngineOption = "transformers",
    log_level: LogLevelOption = "info",
    policy_alias: PolicyAlias = None,
) -> None:
    """Serve POST /v1/chat/completions (plain and streaming), GET /v1/models and sessions.

    Runs the local model, or with --upstream sits in front of any OpenAI-compatible server as
    a context gateway: each conversation is fitted to the upstream model's window and kept in
    server-side sessions (docs/serve.md).
    """
    # One piece: one parameter per command-line option (typer reads the options from this
    # signature), so it is as long as the command's interface; the work is in the helpers below.
    uvicorn = _serve_extra()
    from ..models import DEFAULT_CHAT_MODEL
    from ..serve import Limits, check_bind, create_app
    from ..trim import CachePolicy

    policy = aliased(policy, policy_alias)
    model = model or DEFAULT_CHAT_MODEL  # the same default as chat: the model that answers

    _check_policy(policy, gateway=upstream is not None, summarizer=summarizer)
    if recall_tokens is not None and policy != "recall":
        raise ConfigError("--recall-tokens needs --overflow recall")
    cache_policy = CachePolicy() if cache_aware else None
    api_key = os.environ.get(api_key_env) or None
    check_bind(host, api_key, allow_insecure=allow_insecure)
    limits = Limits(api_key=api_key, max_body_bytes=max_body_bytes,
                    request_timeout=request_timeout)
    console = Console(stderr=True, highlight=False, soft_wrap=True)  # one line per log line
    if upstream is not None and engine != "transformers":
        raise ConfigError("--engine chooses what runs the local model; with --upstream the "
                          "upstream server runs it")
    if upstream is not None:
        app = _gateway(upstream, model=upstream_model, context=upstream_context,
                       key_env=upstream_key_env, tokenizer=tokenizer, flatten=flatten,
                       max_queue=max_queue, policy=policy,
                       keep_first=keep_first, recall_tokens=recall_tokens,
                       cache_aware=cache_aware, summarizer=summarizer,
                       summary_timeout=summary_timeout, served_model=served_model_name,
                       default_max_tokens=default_max_tokens, limits=limits,
                       store=_store_url(store), namespace=store_namespace,
                       lock_timeout=lock_timeout, lock_ttl=lock_ttl)
        described = _describe_gateway(app.state.api.backend, policy)
    else:
        backend = _local_backend(model, engine=engine, device=device, dtype=dtype,
                                 context=context,
                                 policy=policy, keep_first=keep_first,
                                 sink_cache=sink_cache, sinks=sinks,
                                 prefix_cache_mb=prefix_cache_mb, cache_policy=cache_policy,
                                 rope=rope,
                                 rope_factor=rope_factor, served_model_name=served_model_name,
                                 threads=threads, console=console,
                                 default_max_tokens=default_max_tokens, max_queue=max_queue)
        described = _describe_local(backend.generator, rope, rope_factor)
        app = create_app(backend=backend, store=_open_sessions(store, store_namespace),
                         limits=limits, default_max_tokens=default_max_tokens,
                         lock_timeout=lock_timeout, lock_ttl=lock_ttl)
    api = app.state.api
    sessions = ("no sessions" if api.sessions is None
                else f"sessions in {_store_name(api.sessions.store)}")
    auth = "API key required" if api_key else "no API key"
    console.print(f"[bold]{escape(api.backend.model_id)}[/] on http://{host}:{port}/v1 · "
                  + escape(f"{described} · {sessions} · {auth}"))
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _store_url(store: str | None) -> str | None:
    """The sessions store ``--store`` names (default: :func:`default_store`); None for "none"."""
    store_url = store or str(default_store())
    return None if store_url == "none" else store_url


def _open_sessions(store: str | None, namespace: str | None) -> Any:
    """The store of :func:`_store_url`, opened (None: no sessions)."""
    from ..stores import open as open_store

    store_url = _store_url(store)
    return None if store_url is None else open_store(store_url, namespace=namespace)


def _serve_extra() -> Any:
    """uvicorn, once the serve extra (FastAPI, uvicorn) is known to be installed."""
    try:
        import uvicorn

        import contextwindow.serve  # noqa: F401 (fails here, with advice, without FastAPI)
    except ImportError as exc:
        raise ConfigError(f"serve needs the serve extra ({exc}); "
                          "pip install 'contextwindow[serve]'") from None
    return uvicorn


def _check_policy(policy: str, *, gateway: bool, summarizer: str = "keyfacts") -> None:
    """Refuse an unknown ``--policy`` or ``--summarizer`` at start-up; ``summary`` is for the
    gateway only, and an upstream summarizer only for it."""
    from ..serve.gateway import SUMMARIZERS
    from ..window import OVERFLOW_MODES

    policies = tuple(m for m in OVERFLOW_MODES if gateway or m not in ("summary", "recall"))
    if policy not in policies:
        raise ConfigError(f"unknown overflow mode {policy!r}; expected one of "
                          f"{', '.join(policies)}"
                          + ("" if gateway else " (summary, recall: with --upstream)"))
    if summarizer not in SUMMARIZERS:
        raise ConfigError(f"unknown summarizer {summarizer!r}; expected one of "
                          f"{', '.join(SUMMARIZERS)}")
    if summarizer != "keyfacts" and not (gateway and policy == "summary"):
        raise ConfigError(f"--summarizer {summarizer} needs --upstream and --overflow summary")


def _describe_gateway(backend: Any, policy: str) -> str:
    fitter = backend.fitter
    writer = getattr(fitter.summaries, "summarizer", None)
    summary = f" ({type(writer).__name__})" if policy == "summary" else ""
    cut = "cache-aware cut" if fitter.cache_policy is not None else "newest turns"
    return (f"gateway to {backend.where} ({backend.upstream_model}) · window "
            f"{backend.window} tokens · policy {policy}{summary} · {cut} · counts "
            f"{fitter.counter.name}")


def _local_backend(model: str | None, *, engine: str, device: str | None, dtype: str | None,
                   context: int | None, policy: str,
                   keep_first: int | None, sink_cache: bool | None, sinks: int | None,
                   prefix_cache_mb: float | None, cache_policy: Any, rope: str | None,
                   rope_factor: float | None, served_model_name: str | None,
                   threads: int | None, console: Console, **options: Any) -> Any:
    from ..rope import RESTORE_METHODS, get_extension
    from ..serve import LocalBackend

    scaled = rope is not None and rope not in RESTORE_METHODS
    extension = get_extension(rope) if rope is not None else None
    # self-extend and dca may go without a factor (their default: 4x the trained length)
    if (rope_factor is not None and not scaled) or (
            scaled and rope_factor is None and extension is None):
        raise ConfigError("--rope and --rope-factor go together")
    generator = load_generator(model, engine=engine, device=device, dtype=dtype,
                               threads=threads, status=console, rope=rope,
                               rope_factor=rope_factor,
                               model_id=served_model_name, context=context, policy=policy,
                               keep_first=keep_first, sink_cache=sink_cache, sinks=sinks,
                               prefix_cache_mb=prefix_cache_mb, cache_policy=cache_policy)
    return LocalBackend(generator, **options)


def _describe_local(generator: Any, rope: str | None, rope_factor: float | None) -> str:
    from ..rope import applied_scaling

    if generator.engine == "llama.cpp":
        cache = "llama.cpp's dense cache, reusing the previous request's prefix"
        factor = rope_factor
    else:
        cache = (f"sink cache ({generator.sinks} sinks + {generator.context - generator.sinks}"
                 " window)" if generator.sink_cache else "dense cache")
        factor = (applied_scaling(generator.model) or {}).get("factor")
    scaled = f" · RoPE {rope} x{factor:g}" if rope and factor else ""
    return (f"{generator.engine} · window {generator.context} tokens · policy "
            f"{generator.policy} (keep_first {generator.keep_first}) · {cache}{scaled}")


def _store_name(store: Any) -> str:
    return str(getattr(store, "where", None) or getattr(store, "path", None) or "memory")


def register(app: typer.Typer) -> None:
    """Add ``serve``."""
    app.command("serve")(serve)
