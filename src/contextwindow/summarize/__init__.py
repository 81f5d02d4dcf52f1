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
    BaseSummarizer,
    FunctionSummarizer,
    Summarizer,
    SummarizerWarning,
    arun_summarizer,
    cut_summary,
    run_summarizer,
)
from .chain import SummaryChain
from .facts import (
    CombinedSummarizer,
    KeyFactsSummarizer,
    drop_oldest_facts,
    extract_facts,
    split_sentences,
)
from .local import TransformersSummarizer
from .openai import OpenAISummarizer
from .prompt import (
    DEFAULT_PROMPT,
    DEFAULT_SYSTEM,
    clean_summary,
    render_prompt,
    render_transcript,
)

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_SYSTEM",
    "BaseSummarizer",
    "CombinedSummarizer",
    "FunctionSummarizer",
    "KeyFactsSummarizer",
    "OpenAISummarizer",
    "Summarizer",
    "SummarizerWarning",
    "SummaryChain",
    "TransformersSummarizer",
    "arun_summarizer",
    "clean_summary",
    "cut_summary",
    "drop_oldest_facts",
    "extract_facts",
    "render_prompt",
    "render_transcript",
    "run_summarizer",
    "split_sentences",
]
