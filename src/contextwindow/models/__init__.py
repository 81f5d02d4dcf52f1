"""Local models: a registry of offline models, loading on a device and dtype, and the
transformers plumbing every model-side module shares."""

from .loading import load_model, model_device, part_paths, resolve
from .registry import DEFAULT_CHAT_MODEL, DEFAULT_MODEL, MODELS

__all__ = [
    "DEFAULT_CHAT_MODEL",
    "DEFAULT_MODEL",
    "MODELS",
    "load_model",
    "model_device",
    "part_paths",
    "resolve",
]

# Kept importable from here (earlier releases listed them); not the API: the model side's own
# plumbing, at home in the modules named.
from .loading import cache_dir, model_spec  # noqa: F401
from .registry import ModelSpec  # noqa: F401
from .rotary import layer_inv_freqs, layer_types, rotary_embedding  # noqa: F401
