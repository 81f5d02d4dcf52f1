"""``contextwindow demo``: the end-to-end tour (what ``make demo`` runs).

1. A long built-in conversation through every memory, with real token counts for gpt-4o and for
   the local model's chat template: what each memory keeps, against the budget.
2. The local model in a short scripted chat through a budgeted "sinks + window" memory.
3. A long generation through the attention-sink KV cache: its size stays constant while a dense
   cache would keep growing.
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
STORY_PROMPT = "Tell me a long story about a lighthouse keeper and a winter storm."


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
    for label, counter in (("gpt-4o (o200k_base + chat framing)", TokenCounter.for_model("gpt-4o")),
                           ("SmolLM2 chat template (exact)", TokenCounter.from_hf(tokenizer))):
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
    """Stream a long generation through a small sink cache; returns the checkpoints."""
    import torch

    from ..generation import IncrementalDecoder, SamplingParams, sample
    from ..kv import SinkCache
    from ..models import model_device
    from ..models.hf import forward
    from ..templates import chat_template_ids

    sinks, window, new_tokens, every = (4, 28, 48, 8) if quick else (4, 124, 256, 32)
    console.rule("[bold]3. A long generation through the attention-sink KV cache")
    console.print(f"SinkCache: {sinks} sink tokens + a {window}-token window. The middle is "
                  "evicted and the kept keys are re-rotated, so the cache never grows. The "
                  "dense column is what a full cache of the same tokens holds.")
    model, tokenizer = generator.model, generator.tokenizer
    ids = chat_template_ids(tokenizer, [{"role": "user", "content": STORY_PROMPT}])
    cache = SinkCache(model, sinks=sinks, window=window)
    params = SamplingParams(max_tokens=new_tokens, temperature=0.8, top_p=0.95, seed=0)
    rng = torch.Generator().manual_seed(0)
    decoder = IncrementalDecoder(tokenizer)
    table = _kv_table()
    text = Text()
    checkpoints: list[dict[str, int]] = []
    eos = generator.eos_ids

    def render() -> Group:
        shown = text.plain[-600:]
        return Group(Panel(Text(shown), title="story (streaming)", title_align="left"), table)

    with Live(render(), console=console, refresh_per_second=8, transient=False) as live, \
            torch.inference_mode():
        device = model_device(model)
        out = forward(model, torch.tensor([ids], device=device), cache, logits_to_keep=1)
        streamed = len(ids)
        for step in range(1, new_tokens + 1):
            logits = out.logits[0, -1].float().cpu()  # sampled with the CPU generator
            logits[list(eos)] = float("-inf")  # no end of story: the point is a long stream
            token = sample(logits, params, rng)
            text.append(decoder.push(token))
            out = forward(model, torch.tensor([[token]], device=device), cache,
                          logits_to_keep=1)
            streamed += 1
            if step % every == 0 or step == new_tokens:
                checkpoints.append(_checkpoint(table, streamed, cache))
            live.update(render())
    console.print()
    final = checkpoints[-1]
    console.print(f"After {final['streamed']:,} tokens the sink cache holds "
                  f"{final['sink_tokens']:,} ({_kib(final['sink_bytes'])}); a dense cache would "
                  f"hold {final['dense_tokens']:,} ({_kib(final['dense_bytes'])}) "
                  "and keep growing.")
    return {"sinks": sinks, "window": window, "checkpoints": checkpoints}


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
        "contextwindow chat --memory sinks --max-tokens 1024    a budgeted, resumable chat",
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

    from ..models import DEFAULT_CHAT_MODEL, resolve

    console = Console(highlight=False)
    started = time.perf_counter()
    model = model or DEFAULT_CHAT_MODEL
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
