"""Local models: offline loading and the transformers plumbing every model-side module shares."""

from .loading import DEFAULT_MODEL, cache_dir, default_gguf_path, load_model, resolve, rotary_embedding

__all__ = ["DEFAULT_MODEL", "cache_dir", "default_gguf_path", "load_model", "resolve", "rotary_embedding"]
