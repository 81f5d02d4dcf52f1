"""The benchmark tables of README.md and docs/, rendered from the JSON in ``docs/results/``.

Each table sits between ``<!-- table: NAME -->`` and ``<!-- /table -->`` in README.md or a page
under docs/. NAME is a JSON file's stem (:data:`RENDER`), or a table drawn from several of them
(:data:`COMPOSED`: the README's headline results). ``tests/test_readme_figures.py`` checks that
every such table is exactly what its JSON renders to, so a figure cannot drift from its
measurement, wherever the table lives.

    .venv/bin/python benchmarks/readme_tables.py           # rewrite the tables in every page
    .venv/bin/python benchmarks/readme_tables.py --check   # exit 1 if one differs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)",
                   re.DOTALL)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)


def _range(cell: dict[str, Any] | None, unit: str, digits: int) -> str:
    """``median unit (min–max)``, or a dash for a measurement that was not reached."""
    if cell is None:
        return "—"
    f = f"{{:,.{digits}f}}"
    return (f"{f.format(cell['median'])} {unit} "
            f"({f.format(cell['min'])}–{f.format(cell['max'])})")


def trim_table(data: dict[str, Any]) -> str:
    ms, speedup = data["ms"], data["speedup_vs_langchain"]
    langchain = data["inputs"]["langchain_core"]
    labels = {
        "contextwindow_openai_dicts": "`contextwindow.trim` (OpenAI dicts in)",
        "contextwindow_langchain_input": "`contextwindow.trim` (LangChain messages in)",
        "langchain_trim_messages": f"langchain-core {langchain} `trim_messages(strategy=\"last\", "
                                   "start_on=\"human\", include_system=True)`",
    }
    rows = [[label, _range(ms[key], "ms", 2),
             "1x" if key == "langchain_trim_messages" else f"{speedup[key]:g}x faster"]
            for key, label in labels.items()]
    rounds = data["inputs"]["rounds"]
    return _table(["", f"median time (min–max over {rounds} rounds)", "vs langchain-core"], rows)


def memory_table(data: dict[str, Any]) -> str:
    checkpoints = [str(c) for c in data["inputs"]["checkpoints"]]
    llama = data["inputs"]["llama_index_core"]
    labels = {
        "contextwindow_in_memory": "`TokenBufferMemory`, in memory",
        "contextwindow_sqlite": "`TokenBufferMemory`, SQLite (every add durable)",
        "naive_recount_buffer": "naive buffer (append, pop oldest while the re-counted "
                                "window is over budget)",
        "llama_index_Memory": f"llama-index-core {llama} `Memory` (current)",
        "llama_index_ChatMemoryBuffer_deprecated": f"llama-index-core {llama} "
                                                   "`ChatMemoryBuffer` (deprecated)",
    }
    limit, rounds = data["inputs"]["limit_s_per_round"], data["inputs"]["rounds"]
    rows = []
    for key, label in labels.items():
        cells = []
        for c in checkpoints:
            cell = data["cumulative_seconds"][key][c]
            partial = cell is not None and cell["runs"] < rounds
            cells.append(_range(cell, "s", 2)
                         + (f", {cell['runs']} of {rounds} rounds" if partial else ""))
        fed = data["messages_fed_per_round"][key]
        fed_cell = f"{min(fed):,}" if min(fed) == max(fed) else f"{min(fed):,}–{max(fed):,}"
        rows.append([label, *cells, fed_cell])
    header = ["contender", *[f"{int(c):,} messages" for c in checkpoints],
              f"messages fed in a {limit:g} s round"]
    return _table(header, rows)


def summary_table(data: dict[str, Any]) -> str:
    config = data["config"]
    rows = []
    for name, row in data["recall"].items():
        label = f"{name} (no budget)" if name == "Buffer" else name
        calls = str(row["summarizations"]) if "Summary" in name else "—"
        rows.append([label, f"{row['recalled']}/{row['facts']}", f"{row['tokens']:,}",
                     str(row["messages"]), calls, f"{row['seconds']:.2f} s"])
    header = [f"memory (budget {config['budget']:,})", "facts kept verbatim", "context tokens",
              "messages", "summarizer calls",
              f"time feeding {config['conversation_messages']} messages"]
    return _table(header, rows)


def natural_recall_table(data: dict[str, Any]) -> str:
    inputs = data["inputs"]
    seeds = inputs["seeds"]
    rows = []
    for name, row in data["summary"].items():
        label = f"{name} (no budget)" if name == "Buffer" else name
        rows.append([label, f"{row['answered']}/{row['of']}",
                     f"{row['corrected_answered']}/{row['corrected_of']}",
                     f"{row['median_tokens']:,.0f}"])
    model = data.get("model_seed0")
    for name, row in (model["rows"] if model else {}).items():
        if "model" in name:
            rows.append([f"{name}, seed 0 only", f"{row['answered']}/{inputs['facts']}",
                         f"{row['corrected_answered']}/{inputs['corrections']}",
                         f"{row['tokens']:,}"])
    header = [f"memory (budget {inputs['budget']:,})", f"answerable ({seeds} seeds)",
              "corrected facts answerable", "context tokens (median)"]
    return _table(header, rows)


def streaming_table(data: dict[str, Any]) -> str:
    inputs, quality = data["inputs"], data["quality"]
    budget, sinks, window = inputs["budget"], inputs["sinks"], inputs["window"]
    labels = ["dense", f"window 0+{budget}", f"sinks {sinks}+{window}",
              f"sinks {sinks}+{window} no reposition", f"recompute {budget} (sampled)"]
    per = quality["ppl_per_segment"]
    rows = []
    for k, (lo, hi) in enumerate(quality["segments"]):
        cells = [f"{per[label][k]:.1f}" for label in labels]
        cells[2] = f"**{cells[2]}**"
        rows.append([f"{lo:,}–{hi:,}", *cells,
                     f"{quality['sinks_ppl_on_recompute_positions'][k]:.1f}",
                     f"{quality['ratios']['sinks_over_recompute_per_segment'][k]:.3f}"])
    rows.append(["all", *[f"{quality['ppl_overall'][label]:.1f}" for label in labels], "", ""])
    header = ["tokens", "dense", f"window 0+{budget}", f"**sinks {sinks}+{window}**",
              "sinks, no re-positioning", "re-computation (sampled)",
              "sinks on the same positions", "sinks / re-computation"]
    return _table(header, rows)


def context_shift_table(data: dict[str, Any]) -> str:
    """bench_context_shift: perplexity per bucket, the two dense runs then four contenders per
    budget; then the whole stream, the ratio to the same engine's dense run, tokens seen."""
    names = {"sinks": "sinks {}", "window": "window {}", "shift_keep": "shift n_keep={}",
             "shift_zero": "shift n_keep=0"}
    dense = ["dense transformers", "dense llama.cpp"]
    cols = [(label, label) for label in dense]
    for budget, keyed in data["runs"].items():
        for kind, label in keyed.items():
            detail = label.split()[-2] if kind in ("sinks", "window") else data["inputs"]["sinks"]
            cols.append((label, f"{int(budget):,}: {names[kind].format(detail)}"))
    per, over, seen = data["ppl_per_bucket"], data["over_own_dense"], data["context_tokens"]
    rows = [[f"{lo:,}–{hi:,}", *(f"{per[label][k]:.1f}" for label, _ in cols)]
            for k, (lo, hi) in enumerate(data["buckets"])]
    rows.append(["all", *(f"**{data['ppl_overall'][label]:.2f}**" for label, _ in cols)])
    rows.append(["× own dense", *(f"{over[label]:.3f}" if label in over else "1"
                                  for label, _ in cols)])
    rows.append(["tokens seen (mean)", *(f"{seen[label]['mean']:,.0f}" if label in seen else "all"
                                         for label, _ in cols)])
    return _table(["tokens", *(title for _, title in cols)], rows)


def cache_table(data: dict[str, Any]) -> str:
    langchain = data["inputs"]["langchain_core"]
    labels = {
        "langchain_trim_messages": f"langchain-core {langchain} `trim_messages`",
        "trim_newest": "`trim` (newest turns that fit)",
        "trim_cache": f"`trim(..., cache_policy=CachePolicy({data['inputs']['low_water']:g}))`",
        "recall": "`RecallMemory(..., cache_policy=CachePolicy())` (recalled turns: "
                  f"{100 * data['inputs']['recall_share']:g}% of the budget)",
    }
    policies = {row["policy"]: row for row in data["policies"]}
    vs_newest = data["billed_at_0.1_vs_trim_newest"]

    def billed(row: dict[str, Any], ratio: str) -> str:
        return f"{row['billed'][ratio]:,} ({100 * row['billed_ratio'][ratio]:.0f}%)"

    rows = [[label, f"{100 * policies[key]['reuse']:.1f}%",
             f"{100 * policies[key]['mean_fill']:.1f}%", str(policies[key]["cuts"]),
             f"{policies[key]['prompt_tokens']:,}", billed(policies[key], "0.5"),
             f"{billed(policies[key], '0.1')}, {vs_newest[key]:g}x `trim`'s"]
            for key, label in labels.items()]
    requests = data["policies"][0]["requests"]
    return _table(["policy", "prompt tokens reused", "mean fill", f"cuts in {requests} requests",
                   "prompt tokens", "billed, cached at 0.5 (share of prompt tokens)",
                   "billed, cached at 0.1"], rows)


def gateway_table(data: dict[str, Any]) -> str:
    rows = [[store, f"{int(size.removeprefix('session_')):,} messages",
             f"{cell['direct']['p50_ms']:.1f} / {cell['direct']['p99_ms']:.1f} ms",
             f"{cell['gateway']['p50_ms']:.1f} / {cell['gateway']['p99_ms']:.1f} ms",
             f"{cell['overhead_p50_ms']:+.1f} / {cell['overhead_p99_ms']:+.1f} ms"]
            for store, sizes in data["overhead"].items() for size, cell in sizes.items()]
    load = data["throughput"]
    rows.append([f"{load['store']}, {load['clients']} clients", "1 → 2 replicas",
                 f"{load['replicas_1']['requests_per_s']:g} requests/s",
                 f"{load['replicas_2']['requests_per_s']:g} requests/s",
                 f"{load['speedup']:g}x"])
    return _table(["store", "session", "upstream directly, p50 / p99",
                   "through the gateway, p50 / p99", "added by the gateway"], rows)


def recall_shares_table(evidence: dict[str, Any], cache: dict[str, Any]) -> str:
    """The recall share's trade-off: the lexical recall's evidence share per budget
    (bench_recall --shares, the default share's row from its own contender) beside the prompt
    cache it keeps (bench_cache's reuse against the cache-aware figure without recall)."""
    default = cache["inputs"]["recall_share"]
    reuse = {float(s): c["vs_trim_cache"] for s, c in cache["recall_share_sweep"].items()}
    reuse[default] = cache["recall_reuse_vs_trim_cache"]
    results, budgets = evidence["results"], evidence["inputs"]["budgets"]
    rows = []
    for share in sorted(reuse):
        name = ("recall, lexical (RecallMemory)" if share == default
                else f"recall, lexical, share {share:g}")
        if name not in results:
            continue
        rows.append([f"{share:g}" + (" (default)" if share == default else ""),
                     *(f"{100 * results[name][str(b)]['all']['evidence']:.1f}%" for b in budgets),
                     f"{reuse[share]:.3f}"])
    return _table(["recall share", *(f"evidence at {b:,}" for b in budgets),
                   "prefix reuse / cache-aware without recall"], rows)


STACKS = {"asyncio_h11": "asyncio + h11 (pure Python)",
          "uvloop_httptools": "uvloop + httptools (`contextwindow[serve]`)"}


def gateway_servers_table(data: dict[str, Any]) -> str:
    """bench_gateway's ``servers``: the gateway on each uvicorn stack, interleaved."""
    servers = data["servers"]
    rows = [[f"{int(size.removeprefix('session_')):,} messages", label,
             f"{cell['p50_ms']:.2f} / {cell['p99_ms']:.2f} ms",
             f"{cell['cpu_ms_per_request']:.2f} ms"]
            for size, cells in servers.items() if size.startswith("session_")
            for name, label in STACKS.items() for cell in [cells[name]]]
    return _table(["session (sqlite)", "uvicorn on", "through the gateway, p50 / p99",
                   "gateway CPU per request"], rows)


def gateway_clients_table(data: dict[str, Any]) -> str:
    """bench_gateway's ``clients``: httpx against aiohttp forwarding the same body."""
    clients = data["clients"]
    rows = [[("back to back" if gap == "gap_0ms" else
              f"after {gap.removeprefix('gap_').removesuffix('ms')} ms idle"), name,
             f"{cell['p50_ms']:.2f} / {cell['p99_ms']:.2f} ms",
             f"{cell['cpu_ms_per_request']:.2f} ms"]
            for gap, cells in clients.items() if gap.startswith("gap_")
            for name, cell in cells.items()]
    return _table(["calls", "upstream client", "request to the instant upstream, p50 / p99",
                   "CPU per request"], rows)


ENGINES = {"local_fp32": "`contextwindow serve`, local engine, fp32",
           "local_bf16": "`contextwindow serve`, local engine, bf16",
           "llamacpp": "llama.cpp's server"}


def _rate(cell: dict[str, Any]) -> str:
    return f"{cell['median']:,.1f} ({cell['min']:,.1f}–{cell['max']:,.1f})"


def llamacpp_table(data: dict[str, Any]) -> str:
    """bench_llamacpp: each engine's prompt and decode speed and its short requests/s."""
    speed, runs = data["speed"], data["short_requests"]["engines"]
    rows = [[label, _rate(speed["engines"][key]["prompt_tokens_per_s"]),
             _rate(speed["engines"][key]["decode_tokens_per_s"]),
             *(f"{run['requests_per_s']:.2f} (p50 {run['latency_p50_s']:.2f} s)"
               for run in runs[key])]
            for key, label in ENGINES.items()]
    clients = [f"requests/s, {run['clients']} client{'s' * (run['clients'] > 1)} "
               f"x {run['requests'] // run['clients']}" for run in runs["llamacpp"]]
    return _table([f"engine ({data['threads']} thread, {data['context_window']:,}-token window)",
                   f"prompt tokens/s, ~{max(speed['prompt_tokens']):,}-token prompt",
                   f"decode tokens/s, {speed['new_tokens']} new", *clients], rows)


def llamacpp_gateway_table(data: dict[str, Any]) -> str:
    """bench_llamacpp: the gateway's added latency per session turn in front of llama.cpp."""
    turns = data["gateway"]["rounds"] + data["gateway"]["warmup_rounds"]

    def session(cell: dict[str, Any]) -> str:
        prompt = cell["forwarded_prompt_tokens"]
        return (f"{cell['stored_messages']:,} messages + {turns} turns (prompts "
                f"{prompt['min']:,}–{prompt['max']:,} tokens)")

    rows = [[session(cell),
             f"{cell['direct']['p50_ms']:.1f} / {cell['direct']['p95_ms']:.1f} ms",
             f"{cell['gateway']['p50_ms']:.1f} / {cell['gateway']['p95_ms']:.1f} ms",
             f"{cell['overhead_p50_ms']:+.1f} / {cell['overhead_p95_ms']:+.1f} ms"]
            for cell in data["gateway"]["sessions"].values()]
    return _table([f"session ({data['gateway']['store']} store)",
                   "llama.cpp directly, p50 / p95", "through the gateway, p50 / p95",
                   "added by the gateway"], rows)


def prefix_table(data: dict[str, Any]) -> str:
    first = data["first_turn"]
    rows = [[f"1 ({first['prompt_tokens']:,} prompt tokens)", f"{first['ttft_s']:.1f} s", "—",
             "—", "—"]]
    rows += [[f"{t['turn']} ({t['warm']['prompt_tokens']:,} prompt tokens)",
              f"{t['cold']['ttft_s']:.1f} s",
              f"{t['warm']['ttft_s']:.2f} s ({t['ttft_ratio']:.1%} of cold)",
              f"{t['warm']['cached_tokens']:,}", "yes" if t["same_reply"] else "**no**"]
             for t in data["turns"]]
    mib = 2**20
    rows.append([f"prefix cache, budget {data['prefix_cache_budget_bytes'] / mib:,.0f} MiB",
                 "—", f"peak {data['prefix_cache_peak_bytes'] / mib:,.1f} MiB", "—", "—"])
    return _table(["turn", "time to first token, cold prefill", "with prefix reuse",
                   "prompt tokens reused", "same greedy reply"], rows)


EXTEND_METHODS = ("none", "ntk", "dynamic", "yarn", "self-extend", "self-extend-dynamic", "dca")


def extend_table(data: dict[str, Any]) -> str:
    """bench_extend: per method, perplexity growth over 32k tokens and every passkey cell
    ("—": not run yet)."""
    ppl, passkey = data["perplexity"], data["passkey"]
    cells = [(depth, length) for depth in ("0.9", "0.5") for length in (4096, 8192, 16384, 32768)]
    methods = [m for m in EXTEND_METHODS
               if m in ppl or any(m in passkey[d] for d in passkey)]

    def key(method: str, depth: str, length: int) -> str:
        cell = passkey[depth].get(method, {}).get(str(length))
        return f"{cell['correct']}/{cell['trials']}" if cell else "—"

    rows = [[f"`{m}`", f"{ppl[m]['last_over_first']:.2f}x" if m in ppl else "—",
             *(key(m, d, n) for d, n in cells)] for m in methods]
    return _table(["method (x4)", "ppl last / first bucket",
                   *(f"passkey {n // 1024}k @ {d}" for d, n in cells)], rows)


def extend_prefill_table(data: dict[str, Any]) -> str:
    """bench_extend: one attention layer's prefill time and its peak memory per length."""
    rows = []
    for length, cell in sorted(data["prefill"].items(), key=lambda kv: int(kv[0])):
        rows.append([f"{int(length):,}", f"{cell['sdpa']['median']:.2f} s",
                     *(f"{cell[m]['median']:.2f} s ({cell[m]['over_sdpa']:.2f}x)"
                       for m in ("self-extend", "dca")),
                     " / ".join(f"{cell[m]['peak_above_inputs_mib']:,.0f}"
                                for m in ("sdpa", "self-extend", "dca"))])
    return _table(["tokens", "SDPA (every frequency method)", "`self-extend`", "`dca`",
                   "peak MiB above the inputs: SDPA / SE / DCA"], rows)


#: bench_llamacpp_rope's GGUF precisions: column name, format of the gaps.
LLAMACPP_ROPE_PRECISIONS = {"f32": ("float32 GGUF", ".1e"), "q4_1": ("Q4_1 GGUF", ".3f")}


def llamacpp_rope_table(data: dict[str, Any]) -> str:
    """bench_llamacpp_rope: per case, the llama.cpp flags (or why there are none), the gap to
    ``scale_rope`` on each GGUF precision the run measured (float32, Q4_1 or both), the mean NLLs
    on the last of them, and how far the flags moved llama.cpp from its unscaled output (on the
    first)."""
    def gaps(cell: dict[str, Any], fmt: str) -> str:
        return " / ".join(format(cell[k], fmt) for k in ("max", "mean", "p99"))

    none = data["methods"]["none"]
    precisions = [p for p in LLAMACPP_ROPE_PRECISIONS if p in none]
    last = LLAMACPP_ROPE_PRECISIONS[precisions[-1]][0]
    rows = []
    for label, row in data["methods"].items():
        if "unsupported" in row:
            reason = row["unsupported"].split(": ", 1)[-1]
            rows.append([f"`{label}`", f"none: {reason}", *["—"] * (len(precisions) + 2)])
            continue
        nll = row[precisions[-1]]
        rows.append([f"`{label}`", f"`{' '.join(row['llamacpp_flags'])}`",
                     *(gaps(row[p], LLAMACPP_ROPE_PRECISIONS[p][1]) for p in precisions),
                     f"{nll['nll_ours']:.4f} / {nll['nll_llamacpp']:.4f}",
                     f"{row['llamacpp_change_vs_none'][precisions[0]]['mean']:.3f}"])
    return _table([f"case (x{data['inputs']['factor']:g}, {data['inputs']['tokens']:,} tokens)",
                   "llama.cpp flags",
                   *(rf"{LLAMACPP_ROPE_PRECISIONS[p][0]}: max / mean / p99 \|Δ\|"
                     for p in precisions),
                   f"{last.removesuffix(' GGUF')} mean NLL: ours / llama.cpp",
                   r"llama.cpp moved vs `none` (mean \|Δ\|)"], rows)


def llamacpp_angles_table(data: dict[str, Any]) -> str:
    """bench_llamacpp_angles: per exported case, the gap to llama.cpp with transformers' rotary
    tables and with ggml's float32 angles (max / mean, and the max per position quarter)."""
    def cell(gap: dict[str, Any]) -> str:
        quarters = ", ".join(f"{q:.1e}" for q in gap["max_by_quarter"])
        return f"{gap['max']:.1e} / {gap['mean']:.1e} ({quarters})"

    rows = [[f"`{label}`", f"{row['frequency_max_relative_difference']:.1e}",
             cell(row["transformers"]), cell(row["ggml_angles"])]
            for label, row in data["methods"].items()]
    return _table([f"case (x{data['inputs']['factor']:g}, {data['inputs']['tokens']:,} tokens)",
                   "frequencies: max relative difference",
                   r"transformers' tables: max / mean \|Δ\| (max per quarter)",
                   r"ggml's float32 angles: max / mean \|Δ\| (max per quarter)"], rows)


RECALL_KINDS = ("single", "multi", "temporal", "updated")


def recall_table(data: dict[str, Any]) -> str:
    """bench_recall: per contender, the evidence share at each budget, then per question kind
    at 2,048 tokens."""
    budgets = [str(b) for b in data["inputs"]["budgets"]]
    rows = []
    for name, cells in data["results"].items():
        at = cells["2048"]
        rows.append([name, *(f"{100 * cells[b]['all']['evidence']:.1f}%" for b in budgets),
                     *(f"{100 * at[k]['evidence']:.0f}%" for k in RECALL_KINDS)])
    return _table(["contender", *(f"{int(b):,} tokens" for b in budgets),
                   *(f"{k} @ 2,048" for k in RECALL_KINDS)], rows)


RECALL_STORES = {"inmemory": "in-memory", "sqlite": "SQLite", "sqlite_normal": "SQLite (normal)",
                 "redis": "Redis", "postgres": "PostgreSQL"}


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _recall_stores(data: dict[str, Any], cell: Callable[[dict[str, Any]], str]) -> str:
    """bench_recall_stores: a row per size, a column per store measured, ``cell(store's)``."""
    sizes = data["sizes"]
    kinds = [kind for kind in RECALL_STORES if any(kind in row for row in sizes.values())]
    rows = [[f"{int(size) // 1000}k", *(cell(row[kind]) if kind in row else "—" for kind in kinds)]
            for size, row in sizes.items()]
    return _table(["stored", *(RECALL_STORES[kind] for kind in kinds)], rows)


def recall_stores_table(data: dict[str, Any]) -> str:
    """Store level: add / search median, the search's p95 in parentheses (ms)."""
    return _recall_stores(data, lambda r: f"{_ms(r['add']['median_ms'])} / "
                                          f"{_ms(r['search']['median_ms'])} "
                                          f"({_ms(r['search']['p95_ms'])})")


def recall_stores_memory_table(data: dict[str, Any]) -> str:
    """A RecallMemory's add + view: median (p95), and the view's median (ms)."""
    return _recall_stores(data, lambda r: f"{_ms(r['memory']['add_plus_view']['median_ms'])} "
                                          f"({_ms(r['memory']['add_plus_view']['p95_ms'])}); "
                                          f"view {_ms(r['memory']['view']['median_ms'])}")


RENDER: dict[str, Callable[[dict[str, Any]], str]] = {
    "bench_extend": extend_table,
    "bench_llamacpp_rope": llamacpp_rope_table,
    "bench_llamacpp_angles": llamacpp_angles_table,
    "bench_recall": recall_table,
    "bench_recall_stores": recall_stores_table,
    "bench_prefix": prefix_table,
    "bench_cache": cache_table,
    "bench_gateway": gateway_table,
    "bench_llamacpp": llamacpp_table,
    "bench_streaming": streaming_table,
    "bench_context_shift": context_shift_table,
    "bench_trim": trim_table,
    "bench_memory": memory_table,
    "bench_summary": summary_table,
    "bench_natural_recall": natural_recall_table,
}


def load(name: str) -> dict[str, Any]:
    """The committed JSON ``docs/results/NAME.json``."""
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


# -- the README's headline results: one figure per topic, each from its benchmark's JSON -------
Row = list[str]  # what was measured, contextwindow's figure, the one beside it, the details link


def _trim_row() -> Row:
    data = load("bench_trim")
    ms, inputs = data["ms"], data["inputs"]
    measured = f"Trimming a {inputs['messages']:,}-message chat to {inputs['budget']:,} tokens"
    ratio = data["speedup_vs_langchain"]["contextwindow_openai_dicts"]
    theirs = (f"langchain-core `trim_messages`: {ms['langchain_trim_messages']['median']:.2f} ms"
              f" ({ratio:g}x slower)")
    return [measured, f"`trim`: {ms['contextwindow_openai_dicts']['median']:.2f} ms", theirs,
            "[memory](docs/memory.md#measured-trimming)"]


def _cache_row() -> Row:
    data = load("bench_cache")
    policies = {row["policy"]: row for row in data["policies"]}
    bill = data["billed_at_0.1_vs_trim_newest"]["trim_cache"]
    ours = (f"`CachePolicy({data['inputs']['low_water']:g})`: "
            f"{100 * policies['trim_cache']['reuse']:.1f}% of prompt tokens, {bill:g}x the bill")
    return [f"Prompt-cache reuse over a {data['inputs']['turns']}-turn chat", ours,
            f"newest turns that fit: {100 * policies['trim_newest']['reuse']:.1f}%",
            "[caching](docs/caching.md#results--benchmarksbench_cachepy)"]


def _streaming_row() -> Row:
    data = load("bench_streaming")
    inputs, overall = data["inputs"], data["quality"]["ppl_overall"]
    sinks = f"sinks {inputs['sinks']}+{inputs['window']}"
    window = f"window 0+{inputs['budget']}"
    stretch = f"{inputs['tokens'] / inputs['trained_length']:g}x the trained length"
    measured = f"Perplexity over a {inputs['tokens']:,}-token stream ({stretch})"
    return [measured, f"{sinks}: {overall[sinks]:.1f}",
            f"dense {overall['dense']:.1f}; {window} {overall[window]:.1f}",
            "[streaming](docs/streaming.md#measured)"]


def _passkey(name: str, policy: str) -> dict[str, Any]:
    return next(cell for cell in load(name)["passkey"] if cell["policy"] == policy)


def _eviction_row() -> Row:
    tova = _passkey("bench_eviction_stream_4k", "tova")
    sinks = _passkey("bench_eviction_goal_4k_sinks", "sinks")
    measured = f"Passkey in a {tova['length']:,}-token prompt, {tova['budget']:,} KV tokens kept"
    return [measured, f"TOVA, stream positions: {tova['correct']}/{tova['trials']}",
            f"sinks + window (StreamingLLM): {sinks['correct']}/{sinks['trials']}",
            "[eviction](docs/eviction.md#measured)"]


def _rope_row() -> Row:
    """Context extension at 4x: the training-free methods beside unscaled RoPE."""
    extend = load("bench_extend")
    ratio = {m: v["last_over_first"] for m, v in extend["perplexity"].items()}
    measured = (f"Perplexity at {extend['perplexity']['dca']['length']:,} tokens "
                f"({extend['inputs']['factor']:g}x the trained length), last bucket / first")
    return [measured, f"DCA: {ratio['dca']:.2f}x; Self-Extend: {ratio['self-extend']:.2f}x",
            f"no scaling: {ratio['none']:.0f}x",
            "[rope](docs/rope.md#measured-smollm2-135m-at-4x-32768-tokens)"]


def _passkey_row() -> Row:
    """The 4x passkey at depth 0.9: which methods read the key, and the rest."""
    cells = {m: c["32768"] for m, c in load("bench_extend")["passkey"]["0.9"].items()
             if "32768" in c}
    found = [m for m, c in cells.items() if c["correct"] >= 9]
    lost = [m for m in cells if m not in found]

    def score(methods: list[str]) -> str:
        return "; ".join(f"{m}: {cells[m]['correct']}/{cells[m]['trials']}" for m in methods)

    return ["Passkey at 32,768 tokens (4x the trained length), depth 0.9", score(found) or "—",
            score(lost), "[rope](docs/rope.md#measured-smollm2-135m-at-4x-32768-tokens)"]


def _prefix_row() -> Row:
    data = load("bench_prefix")
    cold = [turn["cold"]["ttft_s"] for turn in data["turns"]]
    measured = (f"Next turn of a {data['first_turn']['prompt_tokens']:,}-token chat, time to "
                "first token")
    return [measured, f"KV prefix reuse: {data['ttft_ratio_median']:.1%} of a cold prefill",
            f"cold prefill: {min(cold):.1f}–{max(cold):.1f} s",
            "[serve](docs/serve.md#prefix-reuse-across-turns-the-kv-prefix-cache)"]


def _gateway_row() -> Row:
    data = load("bench_gateway")
    cell = data["overhead"]["sqlite"]["session_10"]
    ours = (f"{cell['overhead_p50_ms']:+.1f} ms at p50; two replicas "
            f"{data['throughput']['speedup']:g}x one")
    return ["Context gateway, added per turn (durable SQLite session)", ours,
            f"upstream directly: {cell['direct']['p50_ms']:.1f} ms",
            "[serve](docs/serve.md#gateway-benchmark)"]


def _engine_row() -> Row:
    data = load("bench_llamacpp")
    speed, runs = data["speed"]["engines"], data["short_requests"]["engines"]

    def figures(key: str) -> str:
        return (f"{speed[key]['decode_tokens_per_s']['median']:.1f} / "
                f"{speed[key]['prompt_tokens_per_s']['median']:.0f} tok/s, "
                f"{runs[key][0]['requests_per_s']:.2f} req/s")

    return [f"Same GGUF, {data['threads']} thread: decode / prefill tokens/s, requests/s",
            f"local engine (fp32): {figures('local_fp32')}", f"llama.cpp: {figures('llamacpp')}",
            "[serve](docs/serve.md#which-engine)"]


def _recall_row() -> Row:
    data = load("bench_recall")
    share = data["evidence_all"]
    ours = share["recall, hybrid (RecallMemory)"]["2048"]
    return ["Evidence turns of questions about a long chat, in a 2,048-token context",
            f"`RecallMemory` (hybrid): {100 * ours:.1f}%",
            (f"BM25 top-k {100 * share['BM25 top-k + newest (rank-bm25)']['2048']:.1f}%; "
             "llama-index `VectorMemoryBlock` "
             f"{100 * share['llama-index Memory + VectorMemoryBlock']['2048']:.1f}%; newest "
             f"turns {100 * share['newest turns (TokenBuffer)']['2048']:.1f}%"),
            "[memory](docs/memory.md#measured-evidence-kept-at-a-budget)"]


HEADLINES: tuple[Callable[[], Row], ...] = (
    _trim_row, _cache_row, _recall_row, _streaming_row, _eviction_row, _rope_row,
    _passkey_row, _prefix_row, _gateway_row, _engine_row)


def headline_table() -> str:
    return _table(["measured", "contextwindow", "side by side", "details"],
                  [row() for row in HEADLINES])


#: Tables drawn from several JSON files (no JSON of their own).
COMPOSED: dict[str, Callable[[], str]] = {
    "headline": headline_table,
    "bench_extend.prefill": lambda: extend_prefill_table(load("bench_extend")),
    "bench_llamacpp.gateway": lambda: llamacpp_gateway_table(load("bench_llamacpp")),
    "bench_llamacpp_rope.8k": lambda: llamacpp_rope_table(load("bench_llamacpp_rope_8k")),
    "bench_recall_stores.memory": lambda: recall_stores_memory_table(load("bench_recall_stores")),
    "bench_gateway.servers": lambda: gateway_servers_table(load("bench_gateway")),
    "bench_gateway.clients": lambda: gateway_clients_table(load("bench_gateway")),
    "bench_recall_shares": lambda: recall_shares_table(load("bench_recall_shares"),
                                                       load("bench_cache")),
}


def render(name: str) -> str:
    if name in COMPOSED:
        return COMPOSED[name]()
    return RENDER[name](load(name))


def documents() -> list[Path]:
    """Every page that may hold tables: README.md and docs/*.md."""
    return [README, *sorted(DOCS.glob("*.md"))]


def tables(text: str) -> list[tuple[str, str]]:
    """(name, body) of every table block in ``text``."""
    return [(m["name"], m["body"]) for m in BLOCK.finditer(text)]


def rewrite(text: str) -> str:
    return BLOCK.sub(lambda m: m[1] + render(m["name"]) + m[4], text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 on a difference")
    args = parser.parse_args()
    stale = []
    for page in documents():
        text = page.read_text(encoding="utf-8")
        new = rewrite(text)
        if new == text:
            continue
        stale.append(page.relative_to(ROOT))
        if not args.check:
            page.write_text(new, encoding="utf-8")
    if args.check:
        if stale:
            print(f"tables differ from their JSON in: {', '.join(map(str, stale))}",
                  file=sys.stderr)
        sys.exit(1 if stale else 0)
    print(f"tables re-rendered in {len(stale)} page(s)")


if __name__ == "__main__":
    main()
