"""Presentation of the evaluations: matplotlib plots and rich tables, in one place.

The evaluations return plain results; the CLI and the benchmarks draw them with these
functions, so a figure looks the same whichever of them made it. matplotlib is imported inside
the plot functions only (with the non-interactive Agg backend), so tables need no matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from ..caching import CacheReport
    from .needle import BudgetSweep
    from .recall import RecallReport, RecallRow
    from .streaming import StreamResult

__all__ = [
    "bucket_table",
    "length_table",
    "plot_budget_sweep",
    "plot_cache_billed",
    "plot_evidence",
    "plot_passkey",
    "plot_perplexity",
    "plot_recall",
    "plot_streaming",
    "recall_table",
    "segment_table",
]


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path, **options: Any) -> Path:
    """Write ``fig`` to ``path`` (creating its directory) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **options)
    _pyplot().close(fig)
    return path


# --- streaming perplexity (evaluate.streaming) ---------------------------------------------------


def _smooth(positions: list[int], values: list[float], width: int) -> tuple[list[int], list[float]]:
    """Moving average over ``width`` consecutive scored tokens (positions must be contiguous)."""
    if len(values) < width:
        width = max(1, len(values))
    out_x, out_y = [], []
    acc = sum(values[:width])
    for i in range(width, len(values) + 1):
        if i > width:
            acc += values[i - 1] - values[i - 1 - width]
        out_x.append(positions[i - 1 - width // 2])
        out_y.append(acc / width)
    return out_x, out_y


def _block_means(positions: list[int], nll: list[float]) -> tuple[list[int], list[float]]:
    """Centre and mean NLL of each contiguous block of a sampled run."""
    blocks: dict[int, list[float]] = {}
    prev = None
    key = 0
    for pos, value in zip(positions, nll):
        if prev is None or pos != prev + 1:
            key = pos
        blocks.setdefault(key, []).append(value)
        prev = pos
    return ([k + len(v) // 2 for k, v in blocks.items()],
            [sum(v) / len(v) for v in blocks.values()])


def plot_streaming(
    results: Sequence[StreamResult],
    path: str | Path,
    *,
    trained_length: int | None = None,
    smooth: int = 256,
    title: str | None = None,
) -> Path:
    """Write a plot of log-perplexity (smoothed NLL) over stream position; returns the path.

    Contiguous runs are drawn as lines (moving average over ``smooth`` tokens); sampled runs (the
    re-computation baseline) as one marker per scored block. The trained length is a dashed line.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=120)
    for res in results:
        if not res.positions:
            continue
        label = f"{res.label} (ppl {res.ppl:.1f})"
        if res.positions[-1] - res.positions[0] + 1 == len(res.positions):  # contiguous
            ax.plot(*_smooth(res.positions, res.nll, smooth), label=label, linewidth=1.3)
        else:
            ax.plot(*_block_means(res.positions, res.nll), "o", markersize=4, label=label)
    last = max((res.positions[-1] for res in results if res.positions), default=0)
    if trained_length and trained_length <= last:
        ax.axvline(trained_length, color="grey", linestyle="--", linewidth=1)
        ax.text(trained_length, ax.get_ylim()[1], " trained length", va="top", fontsize=8)
    ax.set_xlabel("token position in the stream")
    ax.set_ylabel(f"log-perplexity (NLL, {smooth}-token moving average)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def segment_table(results: Sequence[StreamResult], segment: int, total: int) -> Table:
    """Rows: stream segments; columns: runs; cells: perplexity (last row: the whole stream)."""
    table = Table(title=f"Perplexity per {segment}-token segment")
    table.add_column("tokens", justify="right")
    per_run = [res.segment_ppl(segment, total=total) for res in results]
    for res in results:
        table.add_column(res.label, justify="right")
    for k in range(len(per_run[0]) if per_run else 0):
        end = min((k + 1) * segment, total)
        table.add_row(f"{k * segment}-{end}", *(_fmt(col[k]) for col in per_run))
    table.add_row("all", *(_fmt(res.ppl) for res in results), style="bold")
    return table


# --- RoPE scaling: perplexity by position and passkey (evaluate.positions) -----------------------


def length_table(title: str, results: Mapping[str, Mapping[int, Any]], methods: Sequence[str],
                 lengths: Sequence[int], cell: Callable[[Any], str], **options: Any) -> Table:
    """Methods (rows) x lengths (columns), each cell ``cell(result)``."""
    table = Table(title=title, **options)
    table.add_column("method")
    for length in lengths:
        table.add_column(str(length), justify="right")
    for method in methods:
        table.add_row(method, *(cell(results[method][L]) for L in lengths))
    return table


def bucket_table(results: Mapping[str, Any], bucket: int, length: int) -> Table:
    """Methods (rows) x position buckets (columns) of perplexity at one sequence ``length``."""
    table = Table(title=f"Perplexity per {bucket}-token bucket at {length} tokens")
    table.add_column("method")
    for s in next(iter(results.values())).starts:
        start = s // 1000 if s % 1000 == 0 else s
        table.add_column(f"{start}-{min(s + bucket, length)}", justify="right")
    for method, result in results.items():
        table.add_row(method, *(f"{p:.1f}" for p in result.ppl))
    return table


def plot_perplexity(
    series: dict[str, tuple[list[int], list[float]]],
    path: Path | str,
    *,
    title: str = "",
    trained: int | None = None,
) -> Path:
    """Line plot of perplexity per position bucket, one line per method (log scale)."""
    plt = _pyplot()
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    end = 0.0
    for method, (starts, ppl) in series.items():
        if not starts:
            continue
        width = starts[1] - starts[0] if len(starts) > 1 else 2 * (starts[0] or 1)
        mids = [(s + width / 2) / 1000 for s in starts]
        end = max(end, (starts[-1] + width) / 1000)
        ax.plot(mids, ppl, marker="o", label=method)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
    if trained and trained / 1000 < end:
        ax.axvline(trained / 1000, color="grey", linestyle="--", linewidth=1)
        ax.text(trained / 1000, ax.get_ylim()[1], " trained length", va="top", fontsize=8,
                color="grey")
    ax.set_xlabel("position (k tokens, bucket centre)")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_passkey(
    accuracy: dict[str, dict[int, float]],
    path: Path | str,
    *,
    title: str = "",
    counts: dict[str, dict[int, tuple[int, int]]] | None = None,
) -> Path:
    """Heat map of passkey accuracy: methods (rows) x lengths (columns); ``counts`` (correct,
    trials) per cell, when given, is printed in each cell; missing cells say "not run"."""
    plt = _pyplot()
    methods = list(accuracy)
    lengths = sorted({L for cells in accuracy.values() for L in cells})
    grid = [[accuracy[m].get(L, float("nan")) for L in lengths] for m in methods]
    fig, ax = plt.subplots(figsize=(1.4 * len(lengths) + 2.5, 0.6 * len(methods) + 1.6), dpi=110)
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(L) for L in lengths])
    ax.set_yticks(range(len(methods)), methods)
    ax.set_xlabel("prompt length (tokens)")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if math.isnan(v):
                ax.text(j, i, "not run", ha="center", va="center", fontsize=8, color="grey")
                continue
            label = f"{v:.0%}"
            if counts and lengths[j] in counts.get(methods[i], {}):
                k, n = counts[methods[i]][lengths[j]]
                label += f"\n{k}/{n}"
            ax.text(j, i, label, ha="center", va="center", fontsize=9)
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


# --- fact recall (evaluate.recall) ---------------------------------------------------------------


def _summaries_cell(row: RecallRow) -> str:
    if row.summarizations is None:
        return "-"
    return f"{row.summarizations} ({row.failures} failed)" if row.failures else \
        str(row.summarizations)


def recall_table(report: RecallReport) -> Table:
    """A rich ``Table`` of the report."""
    table = Table(title=f"Fact recall: {len(report.facts)} facts planted early in a "
                        f"{report.conversation_messages}-message conversation "
                        f"({report.conversation_tokens} tokens, {report.counter}); "
                        f"budget {report.budget}")
    table.add_column("memory", no_wrap=True)
    for column in ("kept", "recall", "tokens", "msgs", "summaries", "seconds"):
        table.add_column(column, justify="right")
    for row in report.rows:
        table.add_row(row.name, f"{row.recalled}/{len(row.found)}", f"{row.recall:.0%}",
                      str(row.tokens) if not row.error else row.error,
                      str(row.messages), _summaries_cell(row), f"{row.seconds:.1f}")
    return table


def plot_recall(report: RecallReport, path: str | Path) -> Path:
    """A bar chart: recall per memory, with its context size in tokens on each bar."""
    plt = _pyplot()
    names = [row.name for row in report.rows]
    recall = [100 * row.recall for row in report.rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.25 * len(names)), 4.2))
    bars = ax.bar(range(len(names)), recall, color="#4C72B0")
    for bar, row in zip(bars, report.rows):
        ax.annotate(f"{row.recalled}/{len(row.found)}\n{row.tokens} tok",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                    textcoords="offset points")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_ylim(0, 118)
    ax.set_ylabel("facts still in context (%)")
    ax.set_title(f"Fact recall, {len(report.facts)} facts, budget {report.budget} tokens "
                 f"({report.conversation_tokens}-token conversation)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi=120)


# --- KV eviction budget sweep (evaluate.needle) --------------------------------------------------


def plot_budget_sweep(sweep: BudgetSweep, path: str | Path, *, title: str = "") -> Path:
    """Passkey accuracy (left) and streaming perplexity (right) against the KV budget, one line
    per policy, the full cache as a dashed line (the ceiling); the perplexity panel is left out
    when the sweep has no perplexity."""
    plt = _pyplot()
    policies = list(dict.fromkeys(n.policy for n in sweep.needles if n.budget is not None))
    budgets = sorted({n.budget for n in sweep.needles if n.budget is not None})
    panels = 2 if sweep.perplexity else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.0), dpi=120, squeeze=False)
    acc_ax = axes[0][0]
    for policy in policies:
        acc_ax.plot(budgets, [100 * sweep.accuracy(policy, b) for b in budgets], "o-", label=policy)
    if any(n.policy == "full" for n in sweep.needles):
        acc_ax.axhline(
            100 * sweep.accuracy("full", None), color="grey", ls="--", label="full cache"
        )
    acc_ax.set_ylabel("passkey found (%)")
    acc_ax.set_ylim(-5, 105)
    if panels == 2:
        ppl_ax = axes[0][1]
        for policy in policies:
            points = [(b, sweep.perplexity[(policy, b)]) for b in budgets
                      if (policy, b) in sweep.perplexity]
            ppl_ax.plot(*zip(*points), "o-", label=policy)
        if ("full", None) in sweep.perplexity:
            ppl_ax.axhline(sweep.perplexity[("full", None)], color="grey", ls="--",
                           label="full cache")
        ppl_ax.set_ylabel(f"streaming perplexity ({sweep.ppl_tokens} tokens)")
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.set_xlabel("KV budget (tokens per layer)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# --- prompt caching (contextwindow.caching) ------------------------------------------------------


def plot_cache_billed(reports: Sequence[CacheReport], path: str | Path, *,
                      ratios: Sequence[float] = (0.1,), title: str = "") -> Path:
    """Cumulative billed prompt tokens per request, one line per policy and cached-price ratio
    (solid for the first ratio, dashed after), and each policy's uncached total as a thin line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=120)
    for k, report in enumerate(reports):
        color, width = f"C{k}", max(1.2, 3.6 - 1.2 * k)  # wider first: equal curves stay visible
        x = range(1, len(report.requests) + 1)
        ax.plot(x, report.cumulative_billed(1.0), color=color, lw=0.8, alpha=0.45)
        for style, ratio in zip(("-", "--", ":"), ratios, strict=False):
            ax.plot(x, report.cumulative_billed(ratio), style, color=color, lw=width,
                    label=f"{report.policy}, cached at {ratio:g} "
                          f"(reuse {100 * report.reuse:.0f}%)")
    ax.set_xlabel("request (model call) in the conversation")
    ax.set_ylabel("cumulative billed prompt tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="thin lines: no cache", title_fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# --- evidence recall (evaluate.evidence) ---------------------------------------------------------


def plot_evidence(shares: Mapping[str, Mapping[int, float]], path: str | Path, *,
                  title: str = "", ylabel: str = "gold evidence turns in the context (%)") -> Path:
    """Grouped bars: one group per budget, one bar per contender (``shares[name][budget]``,
    a fraction), each labelled with its percentage."""
    plt = _pyplot()
    names = list(shares)
    budgets = sorted({budget for row in shares.values() for budget in row})
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.5 * len(budgets) * len(names) + 2), 4.4), dpi=120)
    for k, name in enumerate(names):
        xs = [b + (k - (len(names) - 1) / 2) * width for b in range(len(budgets))]
        values = [100 * shares[name].get(budget, math.nan) for budget in budgets]
        bars = ax.bar(xs, values, width * 0.95, label=name, color=f"C{k}")
        for bar, value in zip(bars, values):
            if not math.isnan(value):
                ax.annotate(f"{value:.0f}", (bar.get_x() + bar.get_width() / 2, value),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 1),
                            textcoords="offset points")
    ax.set_xticks(range(len(budgets)), [f"{budget:,} tokens" for budget in budgets])
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
