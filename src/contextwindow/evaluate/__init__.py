"""Evaluations on a loaded model: streaming perplexity, perplexity by position, passkey, fact recall."""
from .positions import PasskeyResult, PositionPerplexity, passkey_retrieval, perplexity_by_position  # noqa: F401
from .streaming import StreamResult, plot_streaming, recompute_perplexity, streaming_perplexity  # noqa: F401
from .recall import Fact, RecallReport, default_memories, fact_recall, make_facts, plant_facts, plot_recall  # noqa: F401
