"""Evaluations on a loaded model: streaming perplexity, perplexity by position, passkey, recall.

Their plots and tables live in :mod:`contextwindow.evaluate.report`. Recall of older turns in
long chats, no model needed: :mod:`.longchat` generates the conversations (facts from
:mod:`.longchat_facts`, everyday talk from :mod:`.longchat_filler` and :mod:`.longchat_talk`),
:mod:`.evidence` scores a context for a question, :mod:`.contenders` builds the contexts
(:mod:`.llamaindex_memory`: llama-index's vector memory on the local embedding model).
"""
from .needle import BudgetSweep, NeedleResult, budget_sweep, needle_in_a_stream  # noqa: F401
from .passkey import PasskeyResult, passkey_retrieval  # noqa: F401
from .positions import PositionPerplexity, perplexity_by_position  # noqa: F401
from .recall import (  # noqa: F401
    Fact,
    RecallReport,
    default_memories,
    fact_recall,
    make_facts,
    plant_facts,
)
from .report import (  # noqa: F401
    plot_budget_sweep,
    plot_passkey,
    plot_perplexity,
    plot_recall,
    plot_streaming,
    recall_table,
    segment_table,
)
from .streaming import StreamResult, recompute_perplexity, streaming_perplexity  # noqa: F401
