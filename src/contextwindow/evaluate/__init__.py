"""Evaluations on a loaded model: streaming perplexity, perplexity by position, passkey, recall.

Their plots and tables live in :mod:`contextwindow.evaluate.report`. Recall of older turns in
long chats, no model needed: :mod:`.longchat` generates the conversations (facts from
:mod:`.longchat_facts`, everyday talk from :mod:`._longchat_filler` and :mod:`._longchat_talk`),
:mod:`.evidence` scores a context for a question, :mod:`.contenders` builds the contexts
(:mod:`._llamaindex_memory`: llama-index's vector memory on the local embedding model).
"""
from .needle import BudgetSweep, budget_sweep, needle_in_a_stream
from .passkey import PasskeyResult, passkey_retrieval
from .positions import PositionPerplexity, perplexity_by_position
from .recall import RecallReport, default_memories, fact_recall, make_facts, plant_facts
from .report import plot_budget_sweep, plot_recall, plot_streaming, recall_table
from .streaming import StreamResult, recompute_perplexity, streaming_perplexity

__all__ = [
    "BudgetSweep",
    "PasskeyResult",
    "PositionPerplexity",
    "RecallReport",
    "StreamResult",
    "budget_sweep",
    "default_memories",
    "fact_recall",
    "make_facts",
    "needle_in_a_stream",
    "passkey_retrieval",
    "perplexity_by_position",
    "plant_facts",
    "plot_budget_sweep",
    "plot_recall",
    "plot_streaming",
    "recall_table",
    "recompute_perplexity",
    "streaming_perplexity",
]

# Kept importable from here (earlier releases exported them); not the API: the other plots and
# tables are in :mod:`.report`, the result types in the modules named.
from .needle import NeedleResult  # noqa: F401
from .recall import Fact  # noqa: F401
from .report import plot_passkey, plot_perplexity, segment_table  # noqa: F401
