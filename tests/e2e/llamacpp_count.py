"""llama.cpp's own prompt-token count of chat requests, without evaluating them.

Run by the llama.cpp venv's interpreter (``llamacpp.prompt_counts`` starts it): ``python
llamacpp_count.py MODEL.gguf`` reads one chat-completions request body (JSON) per line on
stdin and prints, per line, the ``usage.prompt_tokens`` llama.cpp's server would report for
it. It goes the server's own way as far as the prompt is built: the model loaded by the
server's loader (``LlamaProxy.load_llama_from_model_settings``, here with ``vocab_only``: no
weights, nothing evaluated), the body validated by the server's request model and dumped as
its route does, then ``Llama.create_chat_completion`` (the GGUF template's chat handler, its
tokenization); only the completion step is replaced, by one that reports the length of the
prompt it was given. An upstream ``prompt_tokens`` is that length
(``Llama._create_completion`` adds nothing to a prompt given as token ids).

Imports only llama-cpp-python: the project's venv is not on this interpreter's path.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from llama_cpp.server.model import LlamaProxy
from llama_cpp.server.settings import ModelSettings
from llama_cpp.server.types import CreateChatCompletionRequest

# what the server's chat-completions route leaves out of the call (llama_cpp/server/app.py)
EXCLUDED = {"n", "logit_bias_type", "user", "min_tokens"}


class PromptBuilt(Exception):
    """Raised where the server would start evaluating: carries the prompt's token count."""

    def __init__(self, tokens: int) -> None:
        super().__init__(tokens)
        self.tokens = tokens


def _stop_at_prompt(prompt: list[int] | str, **_: Any) -> None:
    if not isinstance(prompt, list):  # chat handlers of GGUF templates pass token ids
        raise TypeError(f"expected the prompt as token ids, got {type(prompt).__name__}")
    raise PromptBuilt(len(prompt))


def main(model: str) -> None:
    llama = LlamaProxy.load_llama_from_model_settings(
        ModelSettings(model=model, vocab_only=True, verbose=False))
    llama.create_completion = _stop_at_prompt  # type: ignore[method-assign]
    for line in sys.stdin:
        kwargs = CreateChatCompletionRequest(**json.loads(line)).model_dump(exclude=EXCLUDED)
        try:
            llama.create_chat_completion(**kwargs)
        except PromptBuilt as built:
            print(built.tokens, flush=True)
        else:
            raise RuntimeError("the chat handler returned without building a prompt")


if __name__ == "__main__":
    main(sys.argv[1])
