"""Finding older messages by what they say, for recall into the window.

- ``text``: what a message is indexed by, a question's search terms (user text is never query
  syntax), the stemmer, and ``Hit``, one search result (torch-free);
- ``lexical``: ``LexicalIndex``, an incremental in-process BM25 index (torch-free), used by the
  stores without a full-text engine of their own; the stores' ``search`` is built on these;
- ``dense``: sentence embeddings from a locally installed model, for the optional dense
  ranking (imports torch on first use).
"""

# Nothing at the package root: recall is used through the memories and the stores, and the
# parts are imported from the modules above (importing this package loads none of them).
__all__: list[str] = []
