"""Shared fixtures: a tiny random-init Llama (fast unit tests) and the real SmolLM2 (smoke tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def corpus_text(name: str = "austen_emma.txt") -> str:
    """A novel from ../shared/corpora (tests may read it; the library never does)."""
    path = CORPORA / name
    if not path.is_file():
        pytest.skip(f"{path} not found (CI has ../shared beside the clone)")
    return path.read_text(encoding="utf-8")


def make_tiny_llama(seed: int = 0, **overrides: Any) -> Any:
    """A 2-layer Llama with GQA (4 heads / 2 KV heads), head_dim 16, vocab 128: fast on CPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    params: dict[str, Any] = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
    )
    params.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**params))
    return model.eval()


@pytest.fixture
def tiny_llama() -> Any:
    return make_tiny_llama()


@pytest.fixture(scope="session")
def smollm2() -> tuple[Any, Any]:
    """The real SmolLM2-135M-Instruct (converted once, then cached); loaded once per run."""
    from contextwindow.models import load_model

    return load_model()
