"""``contextwindow chat``: a terminal chat with the local model, inside a token budget.

The conversation lives in a budgeted memory (token buffer, sinks + window, summary + buffer, or
the newest turns plus older ones recalled by the newest question) backed by SQLite, so
``--session NAME`` resumes it later. Interactive on a terminal (streamed replies, a status line
after each); piped, it reads one user turn per input line and prints one
reply per turn on stdout (status lines go to stderr).
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import BudgetExceededError, ConfigError
from ._turns import TurnStore
from .options import (
    ChatModelOption,
    DeviceOption,
    DtypeOption,
    EngineOption,
    OverflowAlias,
    RecallTokensOption,
    StoreAlias,
    ThreadsOption,
    aliased,
    load_generator,
    memory_status,
)

MEMORY_KINDS = ("trim", "sinks", "summary", "recall")
# Earlier releases called ``trim`` ``token`` (the memory behind it is TokenBufferMemory).
MEMORY_ALIASES = {"token": "trim"}
SUMMARIZERS = ("model", "keyfacts", "combined")
COMMANDS = {
    "/help": "list these commands",
    "/status": "what the context holds: tokens, messages kept, trimmed, summarized, recalled",
    "/exit": "leave (also /quit, Ctrl-D); Ctrl-C leaves with status 130, the turn unsaved",
}
EXIT_ALIASES = ("/exit", "/quit")
COMMAND_WORD = re.compile(r"/[A-Za-z]+")  # "/usr/bin is..." or "/ 2" is text, "/help" is not
INTERRUPTED = 130  # 128 + SIGINT, as shells report a process stopped by Ctrl-C

# The options that shape the conversation's memory, named so the command's signature stays short.
MemoryKindOption = Annotated[str, typer.Option(
    "--overflow", help="What to do with a conversation longer than the budget: trim: keep the "
    "newest turns that fit; sinks: also pin the first messages; summary: fold old turns into "
    "a running summary; recall: also quote older turns that match the newest message.")]
BudgetOption = Annotated[int, typer.Option(
    "--max-tokens", "-n", min=16, help="Prompt-token budget of the conversation.")]
KeepFirstOption = Annotated[int | None, typer.Option(
    min=0, help="Messages after the system prompt that are never trimmed "
    "(default 0, or 2 with --overflow sinks).")]
SummarizerOption = Annotated[str, typer.Option(
    "--summarizer", help="With --overflow summary: model, keyfacts or combined.")]
CacheAwareOption = Annotated[bool, typer.Option(
    "--cache-aware/--newest", help="Cut the conversation back to 60% of the budget at "
    "once, then only append, so each prompt extends the previous one (prefix caches); "
    "--newest keeps the newest turns that fit, shifting every turn.")]


def default_db() -> Path:
    """The chat database under the user data dir (``CONTEXTWINDOW_DATA`` overrides it)."""
    import os

    from platformdirs import user_data_dir

    root = Path(os.environ.get("CONTEXTWINDOW_DATA") or user_data_dir("contextwindow"))
    return root / "chat.sqlite3"


def build_memory(kind: str, max_tokens: int, *, counter: Any, store: Any, session: str,
                 keep_first: int | None = None, summarizer: Any = None,
                 cache_policy: Any = None, recall_tokens: int | None = None) -> Any:
    """A budgeted memory of the given kind (:data:`MEMORY_KINDS`), cutting as ``cache_policy``
    says (a :class:`~contextwindow.trim.CachePolicy`, or None); ``recall`` gives
    ``recall_tokens`` of the budget to recalled turns."""
    from .. import memory as memories

    common = {"counter": counter, "store": store, "session": session,
              "cache_policy": cache_policy}
    kind = MEMORY_ALIASES.get(kind, kind)
    if kind == "trim":
        return memories.TokenBufferMemory(max_tokens, keep_first=keep_first or 0, **common)
    if kind == "sinks":
        return memories.SinkWindowMemory(
            max_tokens, keep_first=memories.DEFAULT_KEEP_FIRST if keep_first is None
            else keep_first, **common)
    if kind == "summary":
        return memories.SummaryBufferMemory(max_tokens, summarizer, keep_first=keep_first or 0,
                                            **common)
    if kind == "recall":
        return memories.RecallMemory(max_tokens, recall_tokens=recall_tokens,
                                     keep_first=keep_first or 0, **common)
    raise ConfigError(f"unknown memory {kind!r}; expected one of {', '.join(MEMORY_KINDS)}")


def build_summarizer(kind: str, engine: Any) -> Any:
    """The summarizer for ``--overflow summary``: the chat model itself (on the chat's
    ``engine``), key facts, or both."""
    from ..summarize import CombinedSummarizer, KeyFactsSummarizer

    if kind == "keyfacts":
        return KeyFactsSummarizer()
    local = engine.summarizer()
    if kind == "model":
        return local
    if kind == "combined":
        return CombinedSummarizer(local, KeyFactsSummarizer())
    raise ConfigError(f"unknown summarizer {kind!r}; expected one of {', '.join(SUMMARIZERS)}")


def status_line(status: dict[str, int]) -> str:
    line = (f"tokens {status['tokens']}/{status['budget']} · "
            f"{status['kept']} of {status['total']} messages in context · "
            f"trimmed {status['dropped']}")
    if status["summarized"]:
        line += f" · summarized {status['summarized']}"
    if status["recalled"]:
        line += f" · recalled {status['recalled']}"
    return line


def chat(
    model: ChatModelOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    memory_kind: MemoryKindOption = "trim",
    max_tokens: BudgetOption = 2048,
    keep_first: KeepFirstOption = None,
    reply_tokens: Annotated[int, typer.Option(min=1, help="Longest reply, in tokens.")] = 256,
    session: Annotated[str | None, typer.Option(
        help="Session to resume or create (default: a new chat-YYYYMMDD-HHMMSS).")] = None,
    store: Annotated[str | None, typer.Option(
        help="Where sessions live: a SQLite file path or sqlite:///PATH, redis://..., "
        "postgresql://... (default: chat.sqlite3 in the user data directory).")] = None,
    system: Annotated[str | None, typer.Option(
        help="System prompt for a new session (default: the model's own).")] = None,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="0 is greedy.")] = 0.2,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.9,
    seed: Annotated[int | None, typer.Option(
        help="Seed for sampling (repeatable replies).")] = None,
    context: Annotated[int | None, typer.Option(
        min=16, help="The model's window (default: its trained length).")] = None,
    summarizer_kind: SummarizerOption = "model",
    recall_tokens: RecallTokensOption = None,
    sink_cache: Annotated[bool | None, typer.Option(
        help="Decode with the attention-sink KV cache (the transformers engine's default; "
        "llama.cpp has none).")] = None,
    cache_aware: CacheAwareOption = True,
    plain: Annotated[bool, typer.Option(
        help="Line-by-line mode even on a terminal (automatic when stdin is piped).")] = False,
    threads: ThreadsOption = None,
    engine: EngineOption = "transformers",
    db: StoreAlias = None,
    memory_alias: OverflowAlias = None,
) -> None:
    """Chat with the local model; the session is budgeted, persisted and resumable.

    Commands: /help, /status, /exit (or /quit). A turn is stored with its reply or not at all.
    Exit status 0 on /exit or end of input, 130 on Ctrl-C (at the prompt or mid-reply).
    """
    from ..generation import SamplingParams
    from ..stores import open as open_store

    store = aliased(store, str(db) if db is not None else None)
    memory_kind = aliased(memory_kind, memory_alias)
    memory_kind = MEMORY_ALIASES.get(memory_kind, memory_kind)
    if memory_kind not in MEMORY_KINDS:
        raise ConfigError(f"unknown overflow mode {memory_kind!r}; "
                          f"expected one of {', '.join(MEMORY_KINDS)}")
    interactive = sys.stdin.isatty() and not plain
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    note = out if interactive else err
    params = SamplingParams(max_tokens=reply_tokens, temperature=temperature, top_p=top_p,
                            seed=seed)
    generator = _load(model, engine=engine, device=device, dtype=dtype, context=context,
                      sink_cache=sink_cache, cache_aware=cache_aware, threads=threads,
                      note=note if interactive else None)
    if max_tokens + generator.reserve_for(reply_tokens) > generator.context:
        raise ConfigError(
            f"--max-tokens {max_tokens} plus --reply-tokens {reply_tokens} exceed the model's "
            f"window of {generator.context} tokens")
    if store is None:
        store = str(default_db())
        default_db().parent.mkdir(parents=True, exist_ok=True)
    turns = TurnStore(open_store(store))
    try:
        memory = _open_memory(memory_kind, max_tokens, generator, turns, store,
                              session=session or time.strftime("chat-%Y%m%d-%H%M%S"),
                              keep_first=keep_first, summarizer_kind=summarizer_kind,
                              recall_tokens=recall_tokens, system=system, note=note)
        turns.commit()  # the system prompt of a new session
        code = _loop(memory, generator, params, turns, interactive=interactive, out=out,
                     err=err)
    finally:
        turns.close()
    if code:
        raise typer.Exit(code)


def _load(model: str | None, *, engine: str, device: str | None, dtype: str | None,
          context: int | None, sink_cache: bool | None, cache_aware: bool, threads: int | None,
          note: Console | None) -> Any:
    """The chat's ``engine`` (default model: the registry's chat model), behind a status
    spinner on ``note`` (interactive runs only)."""
    from ..models import DEFAULT_CHAT_MODEL
    from ..trim import CachePolicy

    return load_generator(model or DEFAULT_CHAT_MODEL, engine=engine, device=device, dtype=dtype,
                          threads=threads, status=note, context=context, policy="trim",
                          sink_cache=sink_cache,
                          cache_policy=CachePolicy() if cache_aware else None)


def _open_memory(memory_kind: str, max_tokens: int, generator: Any, store: Any, where: str, *,
                 session: str, keep_first: int | None, summarizer_kind: str,
                 recall_tokens: int | None, system: str | None, note: Console) -> Any:
    """The session's memory: resumed from ``store`` if it has messages, else new (with the
    ``system`` prompt, if given); says which on ``note``."""
    summarizer = (build_summarizer(summarizer_kind, generator)
                  if memory_kind == "summary" else None)
    memory = build_memory(memory_kind, max_tokens, counter=generator.counter, store=store,
                          session=session, keep_first=keep_first, summarizer=summarizer,
                          cache_policy=generator.cache_policy, recall_tokens=recall_tokens)
    if len(memory):
        opened = f"resumed session [bold]{escape(session)}[/] ({len(memory)} messages)"
    else:
        if system:
            memory.add("system", system)
        opened = f"session [bold]{escape(session)}[/]"
    note.print(f"[dim]{opened} in {escape(where)} · model {escape(generator.model_id)} on "
               f"{generator.engine} (window {generator.context} tokens) · overflow "
               f"{memory_kind} · budget {max_tokens} tokens · /help for commands[/]")
    return memory


def _lines(interactive: bool, out: Console) -> Any:
    """User turns: prompted on a terminal, one per line when piped."""
    if not interactive:
        for line in sys.stdin:
            yield line.rstrip("\n")
        return
    while True:
        try:
            yield out.input("[bold green]you>[/] ")
        except EOFError:
            out.print()
            return


def memory_kind_is_summary(memory: Any) -> bool:
    from ..memory import SummarizingMemory

    return isinstance(memory, SummarizingMemory)


def _now() -> str:
    """When a message was said, to the minute: a recalled turn is quoted with it."""
    import datetime

    return datetime.datetime.now().isoformat(timespec="minutes")


def _loop(memory: Any, generator: Any, params: Any, turns: TurnStore, *, interactive: bool,
          out: Console, err: Console) -> int:
    """Answer each user line until /exit or the end of input (0) or Ctrl-C (130); a turn
    reaches the store only once its reply is complete."""
    note = out if interactive else err
    try:
        for line in _lines(interactive, out):
            text = line.strip()
            if not text:
                continue
            name = text.split()[0]
            if COMMAND_WORD.fullmatch(name):
                if name in EXIT_ALIASES:
                    return 0
                _command(name, memory, note)
                continue
            _turn(memory, generator, params, line, turns, interactive=interactive, out=out,
                  note=note)
    except KeyboardInterrupt:
        turns.rollback()
        memory.reload()
        note.print("\n[yellow]interrupted: this turn is not saved[/]")
        return INTERRUPTED
    except BaseException:
        turns.rollback()
        raise
    return 0


def _command(name: str, memory: Any, note: Console) -> None:
    """Run a slash command; an unknown one is refused (never sent to the model)."""
    if name == "/status":
        note.print(f"[dim]{status_line(memory_status(memory))}[/]")
    elif name == "/help":
        for command, what in COMMANDS.items():
            note.print(f"  {command:<8} {what}", markup=False)
    else:
        note.print(f"unknown command {name}; /help lists the commands (nothing was sent)",
                   markup=False)


def _turn(memory: Any, generator: Any, params: Any, line: str, turns: TurnStore, *,
          interactive: bool, out: Console, note: Console) -> None:
    """One user message and its reply, added to ``memory`` and committed to ``turns`` together.
    A message over the budget is refused, nothing kept: on a terminal with a note, piped with
    the error."""
    started = time.perf_counter()
    with note.status("summarizing older turns...") if interactive \
            and memory_kind_is_summary(memory) else contextlib.nullcontext():
        memory.add("user", line, timestamp=_now())
    try:
        view = memory.messages()
    except BudgetExceededError as exc:
        if not interactive:
            raise
        turns.rollback()
        memory.reload()
        note.print(f"[red]that message does not fit the budget:[/] {escape(str(exc))}")
        return
    fit = generator.fit(view, params.max_tokens)
    if interactive:
        out.print("[bold cyan]assistant>[/] ", end="")

        def show(piece: str) -> None:
            out.print(piece, end="", markup=False, soft_wrap=True)
    else:
        def show(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()
    completion = generator.generate(fit, params, on_text=show)
    if interactive:
        out.print()
    else:
        sys.stdout.write("\n")
        sys.stdout.flush()
    memory.add("assistant", completion.text, timestamp=_now())
    turns.commit()
    status = memory_status(memory)
    extra = (f" · reply {completion.completion_tokens} tokens ({completion.finish_reason}) in "
             f"{time.perf_counter() - started:.2f} s")
    if fit.trimmed_messages:
        extra += f" · {fit.trimmed_messages} more trimmed to fit the window"
    note.print(f"[dim]{status_line(status)}{extra}[/]")


def register(app: typer.Typer) -> None:
    """Add ``chat``."""
    app.command("chat")(chat)
