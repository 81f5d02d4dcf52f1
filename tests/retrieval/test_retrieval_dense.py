"""The packaged all-MiniLM-L6-v2 embedder: the same vectors as sentence-transformers' own
``encode``, found offline, and an import that costs no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from contextwindow.errors import ConfigError
from contextwindow.retrieval.dense import MODEL_ID, Embedder, packaged_model_dir

TEXTS = [
    "Our beagle Pepper chewed my slippers again this morning.",
    "What is the name of my dog?",
    "ok",
    "The plumber rang: actually it's Thursday, not Tuesday. " * 60,  # > 256 word pieces
    "Можно ли поехать в Гент весной? 🙂",
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    import torch

    torch.set_num_threads(1)
    return Embedder(batch_size=2)


def test_matches_sentence_transformers_encode(embedder: Embedder) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(packaged_model_dir()), device="cpu")
    assert reference.max_seq_length == 256
    expected = reference.encode(TEXTS, batch_size=3, convert_to_numpy=True)
    got = embedder.embed(TEXTS)
    assert got.dtype == np.float32
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_vectors_are_unit_length_and_in_input_order(embedder: Embedder) -> None:
    vectors = embedder.embed(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    # batching sorts by length; each row still belongs to its text
    np.testing.assert_allclose(embedder.embed([TEXTS[1]])[0], vectors[1], atol=1e-6)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[4])  # dog ~ dog
    assert embedder.embed([]).shape == (0, 384)
    assert embedder.model_id == MODEL_ID


def test_refuses_a_bare_string_and_bad_limits(embedder: Embedder) -> None:
    with pytest.raises(ConfigError, match="sequence of texts"):
        embedder.embed("one string")
    with pytest.raises(ConfigError, match="batch_size"):
        Embedder(batch_size=0)


def test_model_is_extracted_once_into_the_cache() -> None:
    directory = packaged_model_dir()
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in directory.iterdir()}
    assert packaged_model_dir() == directory


def test_import_needs_no_torch() -> None:
    code = ("import sys\nimport contextwindow.retrieval.dense as d\n"
            "e = d.Embedder()\nprint(e.model_id)\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert MODEL_ID in result.stdout
