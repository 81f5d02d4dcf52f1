"""llama-index-core's ``Memory`` + ``VectorMemoryBlock`` as an evidence-benchmark contender,
on the same local embedding model as the project's hybrid recall.

Two small adapters make it run offline: :class:`LocalEmbedding`, a llama-index
``BaseEmbedding`` over :class:`~contextwindow.retrieval.dense.Embedder`, and
:class:`TextVectorStore`, llama-index's own ``SimpleVectorStore`` keeping each node's text
(``VectorMemoryBlock`` refuses a store that does not, and core ships no other in-memory one).
Everything else is llama-index as a user gets it: its token counting (given our counter's
tokenizer), its flushing of the oldest messages into one node per batch, its query (the
newest messages), its block in the system message. Imported only by
:func:`~.contenders.llamaindex_vector_memory` (llama-index-core is a dev dependency).
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.memory import Memory, VectorMemoryBlock
from llama_index.core.schema import BaseNode
from llama_index.core.storage.chat_store.sql import MessageStatus
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryResult

from ..errors import ConfigError
from ..messages import Message
from ..tokens import TokenCounter
from .evidence import ContextFn

__all__ = ["LocalEmbedding", "TextVectorStore", "builder"]

_SESSION = "longchat"


class LocalEmbedding(BaseEmbedding):
    """A llama-index embedding model backed by :class:`Embedder` (vectors cached by text)."""

    _embedder: Any = PrivateAttr()
    _cache: dict[str, list[float]] = PrivateAttr(default_factory=dict)

    def __init__(self, embedder: Any, **kwargs: Any) -> None:
        super().__init__(model_name=embedder.model_id, **kwargs)
        self._embedder = embedder

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for text, vector in zip(missing, self._embedder.embed(missing)):
                self._cache[text] = vector.tolist()
        return [self._cache[t] for t in texts]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


class TextVectorStore(SimpleVectorStore):
    """``SimpleVectorStore`` that also keeps the nodes, so a query returns their text."""

    stores_text: bool = True
    _nodes: dict[str, BaseNode] = PrivateAttr(default_factory=dict)

    def add(self, nodes: Any, **kwargs: Any) -> list[str]:
        self._nodes.update({node.node_id: node for node in nodes})
        return super().add(nodes, **kwargs)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        result = super().query(query, **kwargs)
        result.nodes = [self._nodes[i] for i in result.ids or []]
        return result

    def copy_nodes(self) -> TextVectorStore:
        """A new store holding the same nodes (and vectors)."""
        store = TextVectorStore()
        store.add(list(self._nodes.values()))
        return store


def _memory(budget: int, counter: TokenCounter, embedding: LocalEmbedding,
            store: TextVectorStore, top_k: int, flush_share: float,
            active: list[ChatMessage] | None = None) -> Memory:
    block = VectorMemoryBlock(vector_store=store, embed_model=embedding,
                              similarity_top_k=top_k)
    return Memory.from_defaults(
        session_id=_SESSION, chat_history=active, token_limit=budget,
        token_flush_size=max(1, int(budget * flush_share)), memory_blocks=[block],
        tokenizer_fn=lambda text: [0] * counter.count_text(text))


def _chat(message: Message) -> ChatMessage:
    return ChatMessage(role=message.role, content=message.content or "")


def builder(embedder: Any = None, *, top_k: int = 2, flush_share: float = 0.1) -> ContextFn:
    """The context function: feed the history once per budget, then per question a copy of
    the active queue and the vectors, the question put, ``get()`` read back as Messages (the
    block's system message new, the queue's messages the originals they came from)."""
    if embedder is None:
        from ..retrieval.dense import Embedder

        embedder = Embedder()
    embedding = LocalEmbedding(embedder)
    fed: dict[int, tuple[list[Message], Memory, TextVectorStore]] = {}

    def build(history: list[Message], question: Message, budget: int,
              counter: TokenCounter) -> list[Message]:
        if budget not in fed or fed[budget][0] is not history:
            store = TextVectorStore()
            memory = _memory(budget, counter, embedding, store, top_k, flush_share)
            for message in history:
                memory.put(_chat(message))
            fed[budget] = (history, memory, store)
        _, memory, store = fed[budget]
        fork = _memory(budget, counter, embedding, store.copy_nodes(), top_k, flush_share,
                       active=memory.get_all(status=MessageStatus.ACTIVE))
        fork.put(_chat(question))
        return _as_messages(fork.get(), [*history, question])

    return build


def _as_messages(result: list[ChatMessage], said: list[Message]) -> list[Message]:
    """llama-index's context as Messages: its queue is the tail of what was said."""
    out = [Message(role="system", content=m.content or "") for m in result
           if m.role.value == "system"]
    queue = [m for m in result if m.role.value != "system"]
    tail = said[len(said) - len(queue):] if queue else []
    for original, message in zip(tail, queue, strict=True):
        if (original.content or "") != (message.content or ""):
            raise ConfigError("llama-index's queue is not the tail of the conversation")
        out.append(original)
    return out
