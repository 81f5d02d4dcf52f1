"""Summarizers: turn a previous summary plus the messages being folded into a new summary.

A summarizer is anything with ``summarize(previous, messages) -> str`` (the :class:`Summarizer`
protocol): ``previous`` is the running summary so far (``None`` at first), ``messages`` the
oldest turns that are leaving the verbatim context. Summary memories call it only when their
budget is exceeded (see :class:`contextwindow.memory.SummaryBufferMemory`).

* :mod:`.base` -- the protocol, :func:`run_summarizer` / :func:`arun_summarizer` (timeout, one
  error type), :class:`FunctionSummarizer` and :func:`cut_summary` (a summary cut to its token
  cap); what memories depend on.
* :mod:`.prompt` -- prompt and transcript rendering, clean-up of a model's answer.
* :mod:`.facts` -- :class:`KeyFactsSummarizer` (no model) and :class:`CombinedSummarizer`.
* :mod:`.chain` -- :class:`SummaryChain`, the summary of what a fit leaves out when no summary
  is stored (the gateway's ``summary`` mode).
* :mod:`.local` -- :class:`TransformersSummarizer`, a local instruct model.
* :mod:`.openai` -- :class:`OpenAISummarizer`, any OpenAI-compatible endpoint.

Importing this package does not import torch or openai; the backends import them when first
used.
"""

from .base import (
    FunctionSummarizer,
    Summarizer,
    SummarizerWarning,
    arun_summarizer,
    run_summarizer,
)
from .facts import CombinedSummarizer, KeyFactsSummarizer
from .local import TransformersSummarizer
from .openai import OpenAISummarizer
from .prompt import DEFAULT_PROMPT, DEFAULT_SYSTEM, clean_summary

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_SYSTEM",
    "CombinedSummarizer",
    "FunctionSummarizer",
    "KeyFactsSummarizer",
    "OpenAISummarizer",
    "Summarizer",
    "SummarizerWarning",
    "TransformersSummarizer",
    "arun_summarizer",
    "clean_summary",
    "run_summarizer",
]

# Kept importable from here (earlier releases listed them); not the API: the parts the
# summarizers and memories are built from, at home in the modules named.
from .base import BaseSummarizer, cut_summary  # noqa: F401
from .chain import SummaryChain  # noqa: F401
from .facts import drop_oldest_facts, extract_facts, split_sentences  # noqa: F401
from .prompt import render_prompt, render_transcript  # noqa: F401
