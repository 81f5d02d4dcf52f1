"""The README's benchmark tables, rendered from the committed JSON in ``docs/results/``.

Each table sits between ``<!-- table: NAME -->`` and ``<!-- /table -->`` in README.md, where
NAME is a JSON file's stem. ``tests/test_readme_figures.py`` checks that every such table is
exactly what its JSON renders to, so a figure cannot drift from its measurement.

    .venv/bin/python benchmarks/readme_tables.py           # rewrite the tables in README.md
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
RESULTS = ROOT / "docs" / "results"
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


def cache_table(data: dict[str, Any]) -> str:
    langchain = data["inputs"]["langchain_core"]
    labels = {
        "langchain_trim_messages": f"langchain-core {langchain} `trim_messages`",
        "trim_newest": "`trim` (newest turns that fit)",
        "trim_cache": f"`trim(..., cache_policy=CachePolicy({data['inputs']['low_water']:g}))`",
    }
    policies = {row["policy"]: row for row in data["policies"]}
    vs_newest = data["billed_at_0.1_vs_trim_newest"]
    rows = [[label, f"{100 * policies[key]['reuse']:.1f}%",
             f"{100 * policies[key]['mean_fill']:.1f}%", str(policies[key]["cuts"]),
             f"{100 * policies[key]['billed_ratio']['0.5']:.0f}%",
             f"{100 * policies[key]['billed_ratio']['0.1']:.0f}% ({vs_newest[key]:g}x `trim`'s)"]
            for key, label in labels.items()]
    requests = data["policies"][0]["requests"]
    return _table(["policy", "prompt tokens reused", "mean fill", f"cuts in {requests} requests",
                   "billed, cached at 0.5 (share of prompt tokens)", "billed, cached at 0.1"],
                  rows)


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


RENDER: dict[str, Callable[[dict[str, Any]], str]] = {
    "bench_prefix": prefix_table,
    "bench_cache": cache_table,
    "bench_gateway": gateway_table,
    "bench_streaming": streaming_table,
    "bench_trim": trim_table,
    "bench_memory": memory_table,
    "bench_summary": summary_table,
    "bench_natural_recall": natural_recall_table,
}


def render(name: str) -> str:
    data = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    return RENDER[name](data)


def tables(text: str) -> list[tuple[str, str]]:
    """(name, body) of every table block in ``text``."""
    return [(m["name"], m["body"]) for m in BLOCK.finditer(text)]


def rewrite(text: str) -> str:
    return BLOCK.sub(lambda m: m[1] + render(m["name"]) + m[4], text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 on a difference")
    args = parser.parse_args()
    text = README.read_text(encoding="utf-8")
    new = rewrite(text)
    if args.check:
        sys.exit(0 if new == text else 1)
    README.write_text(new, encoding="utf-8")
    print(f"{len(tables(new))} tables rendered into {README.name}")


if __name__ == "__main__":
    main()
