"""A local instruct model as summarizer (:class:`TransformersSummarizer`).

Named ``local`` rather than ``transformers`` so that nobody reading ``import transformers``
nearby has to wonder which module it means. torch and the model are imported on first use
only, so importing :mod:`contextwindow.summarize` stays torch-free.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, SummarizerError
from ..messages import Message
from .base import BaseSummarizer
from .prompt import DEFAULT_SYSTEM, check_prompt, clean_summary, render_prompt, render_transcript

__all__ = ["TransformersSummarizer"]


class TransformersSummarizer(BaseSummarizer):
    """Summarize with a local instruct model through its chat template (greedy decoding).

    Pass a loaded ``model`` and ``tokenizer``, or a ``model_path`` (a local transformers
    directory), or neither for the default SmolLM2-135M-Instruct; the model is loaded on the
    first call, not here. Input longer than ``max_input_tokens`` is folded in several calls
    (previous summary + first chunk, that result + next chunk...). ``max_time`` (seconds) is
    passed to ``generate`` so a slow machine stops early instead of running unbounded.
    """

    def __init__(self, model: Any = None, tokenizer: Any = None, *, model_path: str | None = None,
                 prompt: str | None = None, system: str | None = DEFAULT_SYSTEM,
                 max_new_tokens: int = 160, max_input_tokens: int = 2048,
                 max_time: float | None = None) -> None:
        if (model is None) != (tokenizer is None):
            raise ConfigError("pass both model and tokenizer, or neither")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, not {max_new_tokens}")
        if max_input_tokens < 64:
            raise ConfigError(f"max_input_tokens must be >= 64, not {max_input_tokens}")
        self.prompt = check_prompt(prompt)
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.max_time = max_time
        self.model_path = model_path
        self._model, self._tokenizer = model, tokenizer
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        name = self.model_path or getattr(self._tokenizer, "name_or_path", None) or "default"
        return f"TransformersSummarizer({name!r}, max_new_tokens={self.max_new_tokens})"

    def load(self) -> tuple[Any, Any]:
        """The model and tokenizer, loading them on first use (thread-safe)."""
        with self._lock:
            if self._model is None:
                from ..models import load_model

                self._model, self._tokenizer = load_model(self.model_path)
            return self._model, self._tokenizer

    def _chat(self, previous: str | None, lines: Sequence[str]) -> list[dict[str, str]]:
        chat = [{"role": "system", "content": self.system}] if self.system else []
        chat.append({"role": "user", "content": render_prompt(self.prompt, previous, lines)})
        return chat

    def _prompt_len(self, tokenizer: Any, previous: str | None, lines: Sequence[str]) -> int:
        from ..templates import chat_template_ids

        return len(chat_template_ids(tokenizer, self._chat(previous, lines)))

    def _chunks(self, tokenizer: Any, previous: str | None,
                lines: list[str]) -> list[list[str]]:
        """Group lines so that each prompt fits ``max_input_tokens``; cut over-long lines.

        The previous summary is sized at ``max_new_tokens`` for every chunk after the first
        (that is what it will be by then)."""
        base = self._prompt_len(tokenizer, previous, [])
        later = self._prompt_len(tokenizer, "x " * self.max_new_tokens, [])
        room = self.max_input_tokens - max(base, later)
        if room < 16:
            raise SummarizerError(
                f"max_input_tokens={self.max_input_tokens} leaves no room for the conversation "
                f"after the prompt and summary ({max(base, later)} tokens)")
        chunks: list[list[str]] = [[]]
        used = 0
        for line in lines:
            ids = tokenizer.encode(line, add_special_tokens=False)
            if len(ids) + 1 > room:  # one line alone is too long: keep its head
                ids = ids[: room - 2]
                line = tokenizer.decode(ids) + " ..."
            cost = len(ids) + 2  # + newline, and a margin for merges at the joint
            if used + cost > room and chunks[-1]:
                chunks.append([])
                used = 0
            chunks[-1].append(line)
            used += cost
        return chunks

    def _generate(self, model: Any, tokenizer: Any, previous: str | None,
                  lines: Sequence[str]) -> str:
        import torch

        inputs = tokenizer.apply_chat_template(self._chat(previous, lines), tokenize=True,
                                               add_generation_prompt=True, return_dict=True,
                                               return_tensors="pt")
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        options: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": False,
                                   "top_p": None, "top_k": None, "temperature": None}
        if tokenizer.pad_token_id is not None:
            options["pad_token_id"] = tokenizer.pad_token_id
        elif tokenizer.eos_token_id is not None:
            options["pad_token_id"] = tokenizer.eos_token_id
        if self.max_time is not None:
            options["max_time"] = self.max_time
        with torch.inference_mode():
            output = model.generate(**inputs, **options)
        new = output[0, inputs["input_ids"].shape[1]:]
        return clean_summary(tokenizer.decode(new, skip_special_tokens=True))

    def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        model, tokenizer = self.load()
        lines = render_transcript(messages)
        summary = previous
        for chunk in self._chunks(tokenizer, previous, lines):
            summary = self._generate(model, tokenizer, summary, chunk) or summary
        if not summary or not summary.strip():
            raise SummarizerError("the model produced an empty summary")
        return summary
