"""Local models: a registry of offline models, loading on a device and dtype, and the
transformers plumbing every model-side module shares."""

from .loading import cache_dir, load_model, model_device, model_spec, part_paths, resolve
from .registry import DEFAULT_CHAT_MODEL, DEFAULT_MODEL, MODELS, ModelSpec
from .rotary import layer_inv_freqs, layer_types, rotary_embedding

__all__ = [
    "DEFAULT_CHAT_MODEL",
    "DEFAULT_MODEL",
    "MODELS",
    "ModelSpec",
    "cache_dir",
    "layer_inv_freqs",
    "layer_types",
    "load_model",
    "model_device",
    "model_spec",
    "part_paths",
    "resolve",
    "rotary_embedding",
]
