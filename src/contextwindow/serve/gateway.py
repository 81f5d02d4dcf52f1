"""The gateway as a library object: what ``contextwindow serve --upstream`` builds.

:func:`create_gateway` puts a context gateway in front of any OpenAI-compatible server, in
Python::

    app = create_gateway("http://vllm:8000/v1", model="Qwen/Qwen2.5-7B-Instruct",
                         context=32768, tokenizer="/models/qwen2.5-7b", store="sessions.db")
    uvicorn.run(app, host="127.0.0.1", port=8000)

It picks the counter (tiktoken for an OpenAI model name, or a tokenizer directory's chat
template), the summary writer, the window (:func:`window_policy`: a
:class:`~contextwindow.window.Fitter`) and the session store, and returns the FastAPI app of
:func:`~.app.create_app` over an :class:`~.upstream.UpstreamBackend`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnknownModelError
from ..retrieval import lexical
from ..stores import open as open_store
from ..summarize import Summarizer
from ..summarize.chain import SummaryChain
from ..tokens import TokenCounter
from ..trim import CachePolicy
from ..window import Fitter
from .app import create_app
from .security import Limits
from .upstream import UpstreamBackend

__all__ = ["SUMMARIZERS", "WindowPolicy", "create_gateway", "window_policy"]

_CACHE_AWARE = CachePolicy()
#: The summary writers a gateway names: key facts (no model call) or the upstream model.
SUMMARIZERS = ("keyfacts", "upstream")


def window_policy(counter: TokenCounter, context: int, policy: str = "trim", *,
                  keep_first: int | None = None, summarizer: Any | None = None,
                  cache_policy: CachePolicy | None = _CACHE_AWARE,
                  summary_timeout: float | None = None,
                  recall_tokens: int | None = None) -> Fitter:
    """A window of ``context`` tokens counted by ``counter``; ``policy`` is the overflow mode
    (``trim``, ``sinks``, ``summary``, ``recall`` or ``none``); ``summarizer`` writes the
    ``summary`` mode's text (key facts by default), each request's summaries within
    ``summary_timeout`` seconds; ``recall`` brings back older turns into ``recall_tokens``
    (default half the prompt budget), ranked by a session store's index or, for a request
    without a session, by BM25 over its messages."""
    return Fitter(counter, context, mode=policy, keep_first=keep_first,
                  cache_policy=cache_policy,
                  summaries=SummaryChain(summarizer, timeout=summary_timeout),
                  recall_tokens=recall_tokens, rankers=lexical.ranker)


WindowPolicy = window_policy
"""The name this had before the context assembler (:mod:`contextwindow.window`); kept."""


def create_gateway(
    url: str, *, model: str, context: int,
    tokenizer: str | os.PathLike[str] | TokenCounter | None = None,
    policy: str = "trim", keep_first: int | None = None, cache_aware: bool = True,
    summarizer: str | Summarizer | None = "keyfacts", summary_timeout: float = 30.0,
    recall_tokens: int | None = None,
    api_key: str | None = None, served_model: str | None = None,
    default_max_tokens: int = 512, store: Any = None, namespace: str | None = None,
    limits: Limits | None = None, timeout: float | None = None, lock_timeout: float = 30.0,
    lock_ttl: float = 10.0, max_queue: int = 64,
    flatten: bool | None = None,
) -> Any:
    """The FastAPI app of a gateway to the OpenAI-compatible server at ``url`` (its API base,
    e.g. ``http://vllm:8000/v1``) serving ``model``, whose window is ``context`` tokens.

    - ``tokenizer``: what counts the tokens: the upstream model's chat template, from a local
      tokenizer directory, a ``.gguf`` file (the one the engine runs) or a registered model
      name (:mod:`contextwindow.models.registry`); a ready
      :class:`~contextwindow.tokens.TokenCounter`; or None for tiktoken's count of the OpenAI
      model ``model``.
    - ``flatten``: send ``developer`` messages as ``system`` and text-part lists as their
      joined text, as they were counted (engines such as llama.cpp's server answer 500
      otherwise); None (default): flatten when the count is not tiktoken's, i.e. in front of
      an open-weights engine. ``max_queue``: requests in flight before new ones get 503.
    - ``policy`` (``trim``, ``sinks``, ``summary``, ``recall``, ``none``) and ``keep_first``:
      the overflow mode (:mod:`contextwindow.window`); ``recall_tokens``: the ``recall`` mode's
      share of the prompt (default half), filled from the session store's index;
      ``cache_aware``: cut so that consecutive prompts of a conversation share their prefix
      (:class:`~contextwindow.trim.CachePolicy`), else keep the newest turns that fit.
    - ``summarizer``: who writes the ``summary`` mode's text: ``"keyfacts"`` (or None; no model
      call), ``"upstream"`` (the upstream model) or any
      :class:`~contextwindow.summarize.Summarizer`; a model's summaries of one request get
      ``summary_timeout`` seconds, then that request gets key facts.
    - ``api_key``: the upstream's key; ``served_model``: the model id clients send (default
      ``model``); ``default_max_tokens``: the reply reserve when a request sets none.
    - ``store``: where sessions live (a store, a URL for :func:`contextwindow.stores.open`
      with ``namespace``, or None: no sessions); ``lock_timeout`` / ``lock_ttl`` as in
      :func:`~.app.create_app`.
    - ``limits``: the key clients must send, body limits and the request timeout
      (:class:`~.security.Limits`); ``timeout``: seconds an upstream call may take (default:
      the request timeout).
    """
    limits = limits or Limits()
    counter = _counter(model, tokenizer)
    writer = _summarizer(summarizer, url, model, api_key, summary_timeout)
    window = window_policy(counter, context, policy, keep_first=keep_first,
                           summarizer=writer,
                           cache_policy=CachePolicy() if cache_aware else None,
                           summary_timeout=None if writer is None else summary_timeout,
                           recall_tokens=recall_tokens)
    backend = UpstreamBackend(url, upstream_model=model, window=window, api_key=api_key,
                              served_model=served_model, default_max_tokens=default_max_tokens,
                              timeout=limits.request_timeout if timeout is None else timeout,
                              max_queue=max_queue,
                              flatten=(tokenizer is not None) if flatten is None else flatten)
    opened = open_store(store, namespace=namespace) if isinstance(store, str) else store
    return create_app(backend=backend, store=opened, limits=limits,
                      default_max_tokens=default_max_tokens, lock_timeout=lock_timeout,
                      lock_ttl=lock_ttl)


def _counter(model: str, tokenizer: str | os.PathLike[str] | TokenCounter | None
             ) -> TokenCounter:
    """The gateway's counter: the one given, a tokenizer's (:func:`_hf_tokenizer`), or
    tiktoken's for an OpenAI model."""
    if isinstance(tokenizer, TokenCounter):
        return tokenizer
    if tokenizer is not None:
        return TokenCounter.from_hf(_hf_tokenizer(os.fspath(tokenizer)))
    try:
        return TokenCounter.for_model(model)
    except UnknownModelError:
        raise ConfigError(
            f"the gateway cannot count for {model!r} (not an OpenAI model tiktoken knows); "
            "pass --tokenizer: the model's tokenizer directory, its .gguf file or a registered "
            "model name") from None


def _hf_tokenizer(source: str) -> Any:
    """The tokenizer ``source`` names: a local directory, a ``.gguf`` file (transformers reads
    its tokenizer and chat template) or a registered model (its GGUF, or its conversion when
    it has several parts). Never the hub: anything else is a one-line ConfigError."""
    from transformers import AutoTokenizer

    from ..models.loading import converted, gguf_tokenizer, model_spec, part_paths

    path = Path(source).expanduser()
    spec = model_spec(source) if not path.exists() else None
    if spec is not None:
        paths = part_paths(spec)
        path = paths[0] if len(paths) == 1 else converted(spec)
    try:
        if path.is_file() and path.suffix == ".gguf":
            return gguf_tokenizer(path)
        if path.is_dir():
            return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--tokenizer {source}: cannot read a tokenizer there "
                          f"({str(exc).splitlines()[0]})") from None
    from ..models.registry import MODELS

    raise ConfigError(f"--tokenizer {source}: not a tokenizer directory, a .gguf file or a "
                      f"registered model ({', '.join(MODELS)})")


def _summarizer(summarizer: str | Summarizer | None, url: str, model: str,
                api_key: str | None, timeout: float) -> Summarizer | None:
    """The summary writer (None: key facts, which the window's summary chain writes)."""
    if summarizer is None or summarizer == "keyfacts":
        return None
    if summarizer == "upstream":
        return _upstream_summarizer(url, model, api_key, timeout)
    if isinstance(summarizer, str):
        raise ConfigError(f"unknown summarizer {summarizer!r}; expected one of "
                          f"{', '.join(SUMMARIZERS)}, or a Summarizer")
    return summarizer


def _upstream_summarizer(url: str, model: str, api_key: str | None,
                         timeout: float) -> Summarizer:
    """The upstream model writes the summaries, one attempt each (no retries: a failure falls
    back to key facts for that request, the next one asks again), within ``timeout``
    seconds per request."""
    import openai

    from ..summarize import OpenAISummarizer

    client = openai.OpenAI(base_url=url, api_key=api_key or "not-needed", max_retries=0,
                           timeout=timeout)
    return OpenAISummarizer(model, base_url=url, api_key=api_key, client=client,
                            timeout=timeout)
