"""The llama.cpp engine: our fit, llama.cpp's decode (``contextwindow chat / serve --engine
llama.cpp``).

:class:`LlamaCppGenerator` is a sibling of the transformers :class:`~.engine.Generator`: the same
:class:`~.engine.Engine` fits a conversation to the window with the model's own chat template
(the tokenizer transformers reads from the same GGUF, which counts what llama.cpp counts:
``tests/e2e/test_llamacpp.py``), and llama.cpp (``llama_cpp.Llama``, in-process, the ``llamacpp``
extra) evaluates exactly those prompt ids on the GGUF's quantised weights. Text, stop strings,
EOS and finish reasons come from the decode loop every engine shares (:func:`._run.stream`).

What it does differently, because llama.cpp decides it:

* **KV cache**: llama.cpp's own, dense, of ``context`` tokens: prompt plus reply must fit the
  window (the reply reserve is ``max_tokens``, as the transformers engine without its sink
  cache). No attention-sink cache, no scored eviction.
* **Prefix reuse**: llama.cpp keeps the previous request's tokens in its KV cache and
  evaluates only what follows the longest common prefix, which the cache-aware cut makes long;
  :attr:`~._run.Completion.cached_tokens` is what it reused. One sequence, not several
  recent ones (the transformers engine's :mod:`.prefix`); and never the whole prompt: its
  last two tokens are always evaluated (:meth:`LlamaCppGenerator._evaluate_two`), so a seeded
  or greedy reply does not depend on the request before it.
* **Sampling**: llama.cpp's sampler with our settings (greedy at temperature 0, else top-p then
  temperature; top-k, min-p, typical and repeat penalties off). A ``seed`` repeats a reply on
  this engine, not across engines: the random streams differ.
* **RoPE**: the methods llama.cpp can express (:func:`~contextwindow.rope.to_llamacpp_flags`:
  linear, NTK-aware, YaRN) are given to llama.cpp as its flags would; the others are refused
  with the reason.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingExtraError
from ..models.registry import ModelSpec
from ..trim import CachePolicy
from ._run import Completion, stream
from .engine import Engine, FitResult
from .sampling import SamplingParams

__all__ = ["ENGINE", "LlamaCppGenerator", "gguf_path", "gguf_tokenizer_for", "llama_kwargs",
           "rope_settings"]

#: The engine's name, as ``--engine`` spells it.
ENGINE = "llama.cpp"
#: llama.cpp reads this seed as "pick one at random"; ours are folded below it.
_RANDOM_SEED = 0xFFFFFFFF
#: ``--rope-scaling`` values: llama.cpp's ``enum llama_rope_scaling_type``.
_SCALING_TYPES = {"none": 0, "linear": 1, "yarn": 2}
#: llama.cpp flags taking one number: (``llama_cpp.Llama`` argument, type).
_NUMBER_FLAGS: dict[str, tuple[str, Callable[[str], float]]] = {
    "--rope-freq-base": ("rope_freq_base", float),
    "--rope-freq-scale": ("rope_freq_scale", float),
    "--yarn-orig-ctx": ("yarn_orig_ctx", int),
    "--yarn-ext-factor": ("yarn_ext_factor", float),
    "--yarn-attn-factor": ("yarn_attn_factor", float),
    "--yarn-beta-fast": ("yarn_beta_fast", float),
    "--yarn-beta-slow": ("yarn_beta_slow", float),
}
_OVERRIDE_TYPES: dict[str, Callable[[str], Any]] = {
    "float": float, "int": int, "str": str, "bool": lambda text: text == "true"}


def _llama_cpp() -> Any:
    """The ``llama_cpp`` module, or :class:`MissingExtraError` naming the extra."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingExtraError("the llama.cpp engine", "llamacpp", exc) from None
    return llama_cpp


def gguf_path(model: str | None) -> Path:
    """The GGUF file llama.cpp runs for ``model``: a registered model's (its installed file,
    or its parts joined once under the cache dir and checked), or a ``.gguf`` path."""
    from ..models.loading import cache_dir, gguf_file, model_spec, part_paths

    spec = model_spec(model)
    if spec is not None and len(spec.parts) == 1:
        return part_paths(spec)[0]
    if spec is not None:
        joined = cache_dir() / "gguf" / spec.name
        if not (joined / spec.gguf_name).is_file():  # else checked when it was joined
            joined.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".join-", dir=joined) as tmp:
                os.replace(gguf_file(spec, Path(tmp)), joined / spec.gguf_name)
        return joined / spec.gguf_name
    path = Path(str(model)).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    from ..models.registry import MODELS

    raise ConfigError(f"the llama.cpp engine runs GGUF files: {model!r} is neither a registered "
                      f"model ({', '.join(MODELS)}) nor a .gguf file")


def gguf_tokenizer_for(path: Path, spec: ModelSpec | None) -> Any:
    """The tokenizer of the GGUF ``path`` (:func:`~contextwindow.models.loading.gguf_tokenizer`:
    it tokenizes as llama.cpp does). For a registered model it is saved once under the cache
    dir (written aside and renamed, so a killed start never leaves half of one): transformers
    takes half a minute to read Qwen2.5's 151k-token vocabulary from a GGUF, a second to load
    the saved tokenizer."""
    from transformers import AutoTokenizer

    from ..models.loading import CONVERSION, cache_dir, gguf_tokenizer

    if spec is None:
        return gguf_tokenizer(path)
    saved = cache_dir() / "gguf" / spec.name / f"tokenizer-{CONVERSION}"
    if not (saved / "tokenizer_config.json").is_file():
        saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=saved.parent))
        try:
            gguf_tokenizer(path).save_pretrained(tmp)
            os.replace(tmp, saved)
        except OSError:
            if not (saved / "tokenizer_config.json").is_file():  # not a concurrent start's
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(saved)


def llama_kwargs(flags: Sequence[str]) -> dict[str, Any]:
    """``llama_cpp.Llama`` arguments for llama.cpp command-line ``flags`` (as
    :func:`~contextwindow.rope.to_llamacpp_flags` prints them), translated as llama.cpp's own
    argument parser does (``--rope-scale s`` is a frequency scale of ``1 / s``). A flag it does
    not know is a :class:`ConfigError`, never dropped (the window is the engine's own
    ``context``, so not even ``--ctx-size``). The RoPE checks inside llama.cpp
    (``benchmarks/llamacpp_logprobs.py``) translate the exported flags with it too."""
    if len(flags) % 2:
        raise ConfigError(f"llama.cpp flags must be name/value pairs, got {list(flags)}")
    kwargs: dict[str, Any] = {}
    for name, value in zip(flags[::2], flags[1::2], strict=True):
        if name == "--override-kv":  # KEY=TYPE:VALUE, a GGUF metadata override
            key, _, typed = value.partition("=")
            kind, _, text = typed.partition(":")
            if kind not in _OVERRIDE_TYPES:
                raise ConfigError(f"unknown --override-kv type in {value!r}")
            kwargs.setdefault("kv_overrides", {})[key] = _OVERRIDE_TYPES[kind](text)
        elif name == "--rope-scaling":
            if value not in _SCALING_TYPES:
                raise ConfigError(f"unknown --rope-scaling {value!r}")
            kwargs["rope_scaling_type"] = _SCALING_TYPES[value]
        elif name == "--rope-scale":  # llama.cpp: params.rope_freq_scale = 1.0f / value
            kwargs["rope_freq_scale"] = 1.0 / float(value)
        elif name in _NUMBER_FLAGS:
            key, number = _NUMBER_FLAGS[name]
            kwargs[key] = number(value)
        else:
            raise ConfigError(f"no llama_cpp.Llama argument for llama.cpp flag {name}")
    return kwargs


def rope_settings(metadata: Mapping[str, Any], rope: str,
                  factor: float | None) -> tuple[dict[str, Any], int]:
    """The ``llama_cpp.Llama`` arguments of RoPE ``rope`` x ``factor`` on a GGUF with this
    ``metadata``, and the context the scaled model is configured for. The ``rope_parameters``
    are the registry's (what :func:`~contextwindow.rope.scale_rope` gives the transformers
    engine), exported as llama.cpp flags; a method llama.cpp cannot express is a
    :class:`ConfigError` with the reason."""
    from ..rope import RopeInputs, check_factor, compute, get_extension, get_method
    from ..rope.export import to_llamacpp_flags

    extension = get_extension(rope)
    if extension is not None:
        raise ConfigError(f"--rope {rope}: no llama.cpp equivalent: {extension.unsupported}")
    method = get_method(rope)
    if isinstance(method.llamacpp, str):  # before its inputs: the reason is the method's own
        raise ConfigError(f"--rope {rope}: no llama.cpp equivalent for {rope!r}: "
                          f"{method.llamacpp}")
    arch = str(metadata["general.architecture"])
    dim = metadata.get(f"{arch}.rope.dimension_count") or (
        int(metadata[f"{arch}.embedding_length"]) // int(metadata[f"{arch}.attention.head_count"]))
    inputs = RopeInputs(int(dim), float(metadata.get(f"{arch}.rope.freq_base", 10000.0)),
                        check_factor(rope, factor), int(metadata[f"{arch}.context_length"]))
    parameters, length = method.config(inputs, compute(rope, inputs))
    try:
        flags = to_llamacpp_flags(parameters, architecture=arch)
    except ConfigError as exc:
        raise ConfigError(f"--rope {rope}: {exc}") from None
    return llama_kwargs(flags), length


def _eog_ids(llama_cpp: Any, llama: Any, tokenizer: Any) -> frozenset[int]:
    """The ids that end a reply: llama.cpp's end-of-generation tokens (EOS, EOT, ``<|im_end|>``
    ...) and the tokenizer's EOS."""
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    ids = {t for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
    if isinstance(getattr(tokenizer, "eos_token_id", None), int):
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)


class _EvalLog:
    """How many tokens each ``llama.eval`` call of a request evaluated, so the prefix llama.cpp
    reused is measured, not re-derived from its rules: the first call evaluates what follows
    the reused prefix."""

    def __init__(self, llama: Any) -> None:
        self.sizes: list[int] = []
        evaluate = llama.eval

        def logged(tokens: Sequence[int]) -> None:
            self.sizes.append(len(tokens))
            evaluate(tokens)

        setattr(llama, "eval", logged)  # noqa: B010 (an instance attribute shadows the method)


class LlamaCppGenerator(Engine):
    """The llama.cpp engine: our fit (:class:`~.engine.Engine`), decoded by a
    ``llama_cpp.Llama`` on the prompt ids the fit produced (see the module docstring).

    Args:
        llama: a loaded ``llama_cpp.Llama`` whose ``n_ctx`` holds ``context``.
        tokenizer: the same GGUF's tokenizer (:func:`~contextwindow.models.loading.gguf_tokenizer`).
        context: the window in tokens (default: llama.cpp's ``n_ctx``).
        model_id, policy, keep_first, cache_policy: as :class:`~.engine.Engine`.
    """

    engine = ENGINE

    def __init__(
        self,
        llama: Any,
        tokenizer: Any,
        *,
        model_id: str = "local",
        context: int | None = None,
        policy: str = "trim",
        keep_first: int | None = None,
        cache_policy: CachePolicy | None = CachePolicy(),  # noqa: B008 (frozen: safe to share)
    ) -> None:
        n_ctx = int(llama.n_ctx())
        context = n_ctx if context is None else context
        super().__init__(tokenizer, model_id=model_id, context=context, policy=policy,
                         keep_first=keep_first, cache_policy=cache_policy, sink_cache=False)
        if n_ctx < self.context:
            raise ConfigError(f"llama.cpp's context ({n_ctx} tokens) is smaller than the "
                              f"window ({self.context})")
        self.llama = llama
        self.eos_ids = _eog_ids(_llama_cpp(), llama, tokenizer)
        self._evals = _EvalLog(llama)

    @classmethod
    def load(
        cls,
        model: str | None = None,
        *,
        context: int | None = None,
        threads: int | None = None,
        rope: str | None = None,
        rope_factor: float | None = None,
        model_id: str | None = None,
        **options: Any,
    ) -> LlamaCppGenerator:
        """Load ``model`` (a registered name, default SmolLM2-135M-Instruct, or a ``.gguf``
        path) into llama.cpp with a ``context``-token KV cache (default: the trained length,
        times the RoPE factor when scaled) on ``threads`` CPU threads (None or 0: one per
        core)."""
        from transformers.integrations.gguf.reader import read_gguf_metadata

        from ..models.loading import model_spec
        from ..rope import RESTORE_METHODS

        path = gguf_path(model)
        metadata = read_gguf_metadata(str(path))[0]
        settings: dict[str, Any] = {}
        length = int(metadata[f"{metadata['general.architecture']}.context_length"])
        if rope and rope not in RESTORE_METHODS:
            settings, length = rope_settings(metadata, rope, rope_factor)
        context = length if context is None else context
        llama_cpp = _llama_cpp()  # after the checks above: a refusal needs no llama.cpp
        threads = threads or os.cpu_count() or 1  # llama.cpp's own default is half the cores
        llama = llama_cpp.Llama(model_path=str(path), n_ctx=context, n_threads=threads,
                                n_threads_batch=threads, verbose=False, **settings)
        spec = model_spec(model)
        if model_id is None:
            model_id = spec.name if spec is not None else path.stem
        return cls(llama, gguf_tokenizer_for(path, spec), model_id=model_id, context=context,
                   **options)

    def generate(
        self,
        fit: FitResult,
        params: SamplingParams,
        *,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Decode a reply to a fitted prompt in llama.cpp, calling ``on_text`` with each new
        piece of text. llama.cpp evaluates ``fit.prompt_ids`` after the prefix it still holds
        from the previous request; a cancel is seen between tokens."""
        started = time.perf_counter()
        with self.lock:
            if cancel is not None and cancel.is_set():
                return Completion("", "cancelled", seconds=time.perf_counter() - started)
            self._evals.sizes.clear()
            self._evaluate_two(fit.prompt_ids)
            seed = params.seed if params.seed is not None else random.SystemRandom().getrandbits(32)
            self.llama.set_seed(seed % _RANDOM_SEED)
            tokens = self.llama.generate(
                list(fit.prompt_ids), temp=params.temperature, top_p=params.top_p, top_k=0,
                min_p=0.0, typical_p=1.0, repeat_penalty=1.0)
            try:
                completion = stream(_ints(tokens), params, tokenizer=self.tokenizer,
                                    eos_ids=self.eos_ids, started=started, on_text=on_text,
                                    cancel=cancel)
            finally:
                tokens.close()
            evaluated = self._evals.sizes[0] if self._evals.sizes else 0
            completion.kv_cache_tokens = int(self.llama.n_tokens)
            completion.cached_tokens = max(0, fit.prompt_tokens - evaluated)
            return completion

    def _evaluate_two(self, prompt_ids: Sequence[int]) -> None:
        """Make llama.cpp evaluate at least the prompt's last two tokens. Holding all but at
        most one of them, it would evaluate the last alone, and a one-token batch goes through
        kernels that round otherwise than a longer one: measured on SmolLM2, a seeded sample
        then differs from the same request on a fresh cache in 3 seeds of 4 (with a tail of 2
        to 16 tokens, never). So a reply does not depend on what the request before it was."""
        held = list(self.llama.input_ids[:min(self.llama.n_tokens, len(prompt_ids))])
        if len(prompt_ids) >= 2 and self.llama.longest_token_prefix(
                held, prompt_ids) >= len(prompt_ids) - 1:
            self.llama.n_tokens = len(prompt_ids) - 2


def _ints(tokens: Iterator[Any]) -> Iterator[int]:
    """llama.cpp's tokens as plain ints (it yields numpy integers)."""
    for token in tokens:
        yield int(token)
