"""``contextwindow demo``: the end-to-end tour (what ``make demo`` runs).

1. A long built-in conversation through every memory, with real token counts for gpt-4o and for
   the local model's chat template: what each memory keeps, against the budget.
2. The local model in a short scripted chat through a budgeted "sinks + window" memory.
3. A long generation through the attention-sink KV cache: its size stays constant while a dense
   cache would keep growing; the first tokens of the same stream on a dense cache beside it,
   so the reader sees the text stay coherent once the sink cache starts evicting.
4. Where the benchmarks, docs and plots are.

``--quick`` shrinks every part (fewer turns, shorter replies) for tests and a first look.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .options import (
    ChatModelOption,
    DeviceOption,
    DtypeOption,
    ThreadsOption,
    load_generator,
    memory_status,
    quiet_transformers,
)

SCRIPT = (
    "Hi! I'm Ada, and I'm planning a three-day trip to Lisbon in May.",
    "What are three things I should see there?",
    "What food should I try?",
    "Is it easy to get around by tram?",
    "Thanks! What is my name, and which city am I visiting?",
)
# A task a 0.5B model does well and that runs as long as it is let: a numbered list it keeps
# continuing, its answer started for it (a story prompt got a refusal and a loop from it; the
# request alone, a repeated preamble). Long enough to pass the window many times, and easy to
# check by eye: the numbers must keep counting once the sink cache evicts.
LIST_PROMPT = "Write the numbers from one to three hundred in English words, one per line."
LIST_START = "1. one\n2. two\n3. three\n4."


def list_prompt_ids(tokenizer: Any) -> list[int]:
    """The sink stream's prompt: the request, then the start of the answer."""
    from ..templates import chat_template_ids

    return (chat_template_ids(tokenizer, [{"role": "user", "content": LIST_PROMPT}])
            + tokenizer.encode(LIST_START, add_special_tokens=False))


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):,.2f} MiB"


def memory_rows(conversation: list[Any], budget: int, counter: Any) -> list[dict[str, Any]]:
    """Run ``conversation`` through each memory; what each keeps, counted with ``counter``."""
    from .. import memory as memories
    from ..summarize import KeyFactsSummarizer

    candidates: list[tuple[str, Any]] = [
        ("Buffer", lambda: memories.BufferMemory(counter=counter)),
        ("Window (k=4 turns)", lambda: memories.WindowMemory(4, counter=counter)),
        ("TokenBuffer", lambda: memories.TokenBufferMemory(budget, counter=counter)),
        (f"SinkWindow (keep {memories.DEFAULT_KEEP_FIRST})",
         lambda: memories.SinkWindowMemory(budget, counter=counter)),
        ("SummaryBuffer (key facts)",
         lambda: memories.SummaryBufferMemory(budget, KeyFactsSummarizer(), counter=counter)),
    ]
    rows = []
    for name, make in candidates:
        memory = make()
        for message in conversation:
            memory.add_message(message)
        rows.append({"memory": name, **memory_status(memory, budget)})
    return rows


def _memory_table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("memory", "messages kept", "tokens / budget", "pinned", "dropped",
                   "summarized"):
        table.add_column(column, justify="left" if column == "memory" else "right",
                         no_wrap=True)
    for row in rows:
        over = row["tokens"] > row["budget"]
        tokens = f"{row['tokens']:,} / {row['budget']:,}"
        table.add_row(row["memory"], f"{row['kept']} of {row['total']}",
                      f"[red]{tokens} over[/]" if over else tokens, str(row["pinned"]),
                      str(row["dropped"]), str(row["summarized"]))
    return table


def part_memories(console: Console, tokenizer: Any, *, quick: bool) -> None:
    from ..samples import sample_conversation
    from ..tokens import TokenCounter

    turns, budget = (16, 384) if quick else (60, 1024)
    conversation = sample_conversation(turns, seed=7)
    console.rule("[bold]1. A long conversation through each memory")
    console.print(f"{turns} user turns with tool calls every 5th turn: {len(conversation)} "
                  f"messages. Budget {budget} prompt tokens, system prompt always kept.")
    for label, counter in (
            ("gpt-4o (o200k_base + chat framing)", TokenCounter.for_model("gpt-4o")),
            ("the local model's chat template (exact)", TokenCounter.from_hf(tokenizer))):
        rows = memory_rows(conversation, budget, counter)
        console.print(_memory_table(f"counted for {label}", rows))


def part_chat(console: Console, generator: Any, *, quick: bool) -> None:
    from ..generation import SamplingParams
    from ..memory import SinkWindowMemory

    budget = 100 if quick else 192
    reply = 8 if quick else 40
    script = SCRIPT[:3] if quick else SCRIPT
    console.rule("[bold]2. The local model, chatting inside a budget")
    memory = SinkWindowMemory(budget, counter=generator.counter)
    memory.add("system", "You are a helpful travel assistant. Answer in two or three sentences.")
    console.print(f"SinkWindowMemory: {budget} prompt tokens, the system prompt and the first "
                  f"exchange pinned, greedy replies of up to {reply} tokens.")
    params = SamplingParams(max_tokens=reply, temperature=0.0)
    for turn in script:
        memory.add("user", turn)
        console.print(f"[bold green]you>[/] {turn}")
        fit = generator.fit(memory.messages(), params.max_tokens)
        memory.add("assistant", _stream_reply(console, generator, fit, params))
        plan = memory.plan()
        console.print(f"[dim]  context {memory.token_count()}/{budget} tokens · "
                      f"{len(memory.messages())} of {len(memory)} messages · pinned {plan.pinned}"
                      f" · dropped {plan.dropped} · prompt was {fit.prompt_tokens} tokens[/]",
                      highlight=False)


def _stream_reply(console: Console, generator: Any, fit: Any, params: Any) -> str:
    """Generate a reply: a spinner until the first piece of text arrives, then stream it."""
    status = console.status("thinking...")
    status.start()
    started = False

    def show(piece: str) -> None:
        nonlocal started
        if not started:
            status.stop()
            console.print("[bold cyan]assistant>[/] ", end="")
            started = True
        console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)

    try:
        completion = generator.generate(fit, params, on_text=show)
    finally:
        status.stop()
    if not started:
        console.print("[bold cyan]assistant>[/] ", end="")
    console.print()
    return completion.text


def part_sink_stream(console: Console, generator: Any, *, quick: bool) -> dict[str, Any]:
    """Stream a long generation through a small sink cache, then show its first tokens beside
    the same stream on a dense cache; returns the checkpoints and both texts."""
    from ..kv import SinkCache

    # Qwen2.5-0.5B keeps counting through the eviction with a 252-token window; with 124 it
    # switches language near "50." (measured): the window is part of what makes it work.
    sinks, window, new_tokens, every = (4, 28, 48, 8) if quick else (4, 252, 288, 32)
    console.rule("[bold]3. A long generation through the attention-sink KV cache")
    console.print(f"SinkCache: {sinks} sink tokens + a {window}-token window. The middle is "
                  "evicted and the kept keys are re-rotated, so the cache never grows. The "
                  "dense column is what a full cache of the same tokens holds.")
    console.print(f"Prompt: {LIST_PROMPT} The answer starts: {LIST_START!r}", markup=False)
    ids = list_prompt_ids(generator.tokenizer)
    cache = SinkCache(generator.model, sinks=sinks, window=window)
    table = _kv_table()
    text = Text(LIST_START)
    checkpoints: list[dict[str, int]] = []
    decoder = _decoder(generator)

    def render() -> Group:
        shown = text.plain[-600:]
        return Group(Panel(Text(shown), title="the list (streaming)", title_align="left"), table)

    with Live(render(), console=console, refresh_per_second=8, transient=False) as live:
        def on_token(step: int, token: int) -> None:
            text.append(decoder.push(token))
            if step % every == 0 or step == new_tokens:
                checkpoints.append(_checkpoint(table, len(ids) + step, cache))
            live.update(render())

        sink_tokens = _decode(generator, ids, cache, new_tokens, on_token)
    console.print()
    final = checkpoints[-1]
    console.print(f"After {final['streamed']:,} tokens the sink cache holds "
                  f"{final['sink_tokens']:,} ({_kib(final['sink_bytes'])}); a dense cache would "
                  f"hold {final['dense_tokens']:,} ({_kib(final['dense_bytes'])}) "
                  "and keep growing.")
    with console.status("the same stream on a dense cache..."):
        dense_tokens = _decode(generator, ids, None, new_tokens, lambda step, token: None)
    side = _side_by_side(generator, dense_tokens, sink_tokens,
                         evicting_from=max(0, sinks + window - len(ids)))
    console.print(side["table"])
    console.print(f"Identical for the first {side['same']} of {new_tokens} tokens; the sink "
                  f"cache evicts from generated token {side['evicting_from']} on.")
    return {"sinks": sinks, "window": window, "checkpoints": checkpoints,
            "prompt_tokens": len(ids), "dense": dense_tokens, "sink": sink_tokens,
            "same": side["same"]}


def _decoder(generator: Any) -> Any:
    from ..generation import IncrementalDecoder

    return IncrementalDecoder(generator.tokenizer)


def _decode(generator: Any, ids: list[int], cache: Any, steps: int,
            on_token: Any) -> list[int]:
    """``steps`` greedy tokens after ``ids`` on ``cache`` (None: a dense cache), the end of
    text banned (the point is a long stream); ``on_token(step, token)`` after each."""
    import torch
    from transformers import DynamicCache

    from ..models import model_device
    from ..models.hf import forward

    model = generator.model
    cache = cache if cache is not None else DynamicCache(config=model.config)
    eos = list(generator.eos_ids)
    tokens: list[int] = []
    with torch.inference_mode():
        device = model_device(model)
        out = forward(model, torch.tensor([ids], device=device), cache, logits_to_keep=1)
        for step in range(1, steps + 1):
            logits = out.logits[0, -1].float()
            logits[eos] = float("-inf")
            token = int(logits.argmax())
            tokens.append(token)
            out = forward(model, torch.tensor([[token]], device=device), cache,
                          logits_to_keep=1)
            on_token(step, token)
    return tokens


def _side_by_side(generator: Any, dense: list[int], sink: list[int], *,
                  evicting_from: int) -> dict[str, Any]:
    """The two streams' texts in two columns, and how many first tokens they share."""
    same = next((i for i, (a, b) in enumerate(zip(dense, sink, strict=True)) if a != b),
                len(dense))
    table = Table(title=f"the same {len(dense)} generated tokens on each cache",
                  title_justify="left", expand=True)
    table.add_column("dense cache (keeps every token)", ratio=1)
    table.add_column(f"sink cache (evicting after {evicting_from} generated tokens)", ratio=1)
    decode = generator.tokenizer.decode
    table.add_row(Text(LIST_START + decode(dense)), Text(LIST_START + decode(sink)))
    return {"table": table, "same": same, "evicting_from": evicting_from}


def _kv_table() -> Table:
    """The table of cache sizes that the stream fills in at each checkpoint."""
    table = Table(title="KV cache during the stream", title_justify="left")
    for column in ("tokens streamed", "sink cache tokens", "sink cache KV", "dense cache tokens",
                   "dense cache KV"):
        table.add_column(column, justify="right")
    return table


def _checkpoint(table: Table, streamed: int, cache: Any) -> dict[str, int]:
    """The sink cache's size after ``streamed`` tokens, and a dense cache's for the same
    tokens (the same bytes per token); added as a row of ``table``."""
    from ..kv import cache_nbytes

    held, nbytes = cache.get_seq_length(), cache_nbytes(cache)
    dense_bytes = nbytes // held * streamed
    table.add_row(f"{streamed:,}", f"{held:,}", _kib(nbytes), f"{streamed:,}", _kib(dense_bytes))
    return {"streamed": streamed, "sink_tokens": held, "sink_bytes": nbytes,
            "dense_tokens": streamed, "dense_bytes": dense_bytes}


def part_pointers(console: Console) -> None:
    root = Path(__file__).resolve().parents[3]
    console.rule("[bold]4. Where to go next")
    lines = [
        "contextwindow chat --overflow sinks --max-tokens 1024  a budgeted, resumable chat",
        "contextwindow serve --port 8000                        an OpenAI-compatible server",
    ]
    if (root / "benchmarks").is_dir():
        benches = sorted(p.name for p in (root / "benchmarks").glob("bench_*.py"))
        lines.append(f"benchmarks/  {', '.join(benches) or '(none yet)'}  (make bench; each "
                     "prints one JSON object)")
    if (root / "docs").is_dir():
        docs = sorted(p.name for p in (root / "docs").glob("*.md"))
        lines.append(f"docs/        {', '.join(docs) or '(none yet)'}  (docs/serve.md: chat and "
                     "serve)")
        plots = sorted(p.name for p in (root / "docs" / "img").glob("*")) \
            if (root / "docs" / "img").is_dir() else []
        listed = (": " + ", ".join(plots[:6]) + (" ..." if len(plots) > 6 else "")) if plots else ""
        lines.append(f"docs/img/    {len(plots)} plot(s){listed}")
    lines.append("README.md    the overview and the measured numbers")
    for line in lines:
        console.print(f"  {line}", markup=False, highlight=False)


def busy_machine() -> bool:
    """True when the 1-minute load average exceeds the core count (other work is running)."""
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1)
    except OSError:  # no load average on this platform
        return False


def demo(
    model: ChatModelOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    quick: Annotated[bool, typer.Option(
        help="Smaller conversation, shorter replies and stream "
        "(a fast first look; used by tests).")] = False,
    threads: ThreadsOption = None,
) -> None:
    """The end-to-end tour: memories, a budgeted chat, the sink cache, and where to go next."""
    import torch
    from transformers import AutoTokenizer

    from ..models import DEFAULT_CHAT_MODEL, MODELS, resolve

    console = Console(highlight=False)
    started = time.perf_counter()
    model = model or DEFAULT_CHAT_MODEL
    if model in MODELS:  # what runs, from which packages, and how it was checked
        console.print(MODELS[model].provenance, style="dim", markup=False)
    if threads is None and busy_machine():
        threads = 1
        console.print(f"[dim]other processes keep the {os.cpu_count()} cores busy (load "
                      f"{os.getloadavg()[0]:.1f}): running the model on one thread, which is "
                      "faster on oversubscribed cores (--threads overrides)[/]")
    previous_threads = torch.get_num_threads()
    quiet_transformers(threads)
    try:
        with console.status("loading the tokenizer (the first run converts the model, ~1 min)..."):
            tokenizer = AutoTokenizer.from_pretrained(resolve(model))
        part_memories(console, tokenizer, quick=quick)
        generator = load_generator(model, device=device, dtype=dtype, threads=threads,
                                   status=console, message="loading the local model...")
        console.print(f"[dim]loaded {generator.model_id}: window {generator.context} tokens[/]")
        part_chat(console, generator, quick=quick)
        part_sink_stream(console, generator, quick=quick)
        part_pointers(console)
    finally:
        torch.set_num_threads(previous_threads)  # when called in-process (tests)
    console.print(f"[dim]demo finished in {time.perf_counter() - started:.0f} s[/]")


def register(app: typer.Typer) -> None:
    """Add ``demo``."""
    app.command("demo")(demo)
