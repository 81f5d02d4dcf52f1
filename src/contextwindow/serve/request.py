"""A ``POST /v1/chat/completions`` body checked into a typed :class:`ChatRequest`.

Each rule lives in one place: this module checks the JSON shape (which fields exist, their
types, what a local model cannot do), :class:`~contextwindow.sampling.SamplingParams` (text
side) checks the sampling values, and the backend's ``prepare`` checks the messages. A failure
becomes an OpenAI-shaped :class:`~.protocol.ApiError` naming the offending request field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..adapters import as_messages
from ..errors import ConfigError, InvalidMessageError
from ..messages import Message
from ..sampling import SamplingParams
from .protocol import ApiError, ChatRequest

__all__ = ["parse_chat_request"]

# Request fields accepted but without effect on a local model (listed in docs/serve.md).
_IGNORED_FIELDS = frozenset({
    "user", "metadata", "store", "service_tier", "parallel_tool_calls", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "response_format",
    "tool_choice", "tools", "functions", "function_call", "reasoning_effort", "modalities",
    "prediction", "audio", "web_search_options", "safety_identifier", "prompt_cache_key",
    "verbosity",
})
_KNOWN_FIELDS = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
    "seed", "n", "stream", "stream_options",
}) | _IGNORED_FIELDS
# What a gateway rewrites before forwarding a request: the rest goes upstream as given.
_REWRITTEN_FIELDS = frozenset({"model", "messages"})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _model(payload: Mapping[str, Any], models: tuple[str, ...]) -> str:
    model = payload.get("model")
    if model is None:
        raise ApiError(400, "you must provide a model parameter", param="model",
                       code="missing_required_parameter")
    if not isinstance(model, str):
        raise ApiError(400, "model must be a string", param="model", code="invalid_type")
    if model not in models:
        raise ApiError(404, f"The model `{model}` does not exist. This server serves: "
                       f"{', '.join(models)}.", param="model", code="model_not_found")
    return model


def _messages(payload: Mapping[str, Any],
              prepare: Callable[[list[Any]], list[Message]] | None) -> list[Message]:
    raw = payload.get("messages")
    if raw is None:
        raise ApiError(400, "Missing required parameter: 'messages'.", param="messages",
                       code="missing_required_parameter")
    if not isinstance(raw, list):
        raise ApiError(400, "messages must be an array of message objects", param="messages",
                       code="invalid_type")
    if not raw:
        raise ApiError(400, "messages must contain at least one message", param="messages",
                       code="empty_array")
    try:
        return prepare(raw) if prepare else as_messages(raw)
    except InvalidMessageError as exc:
        raise ApiError(400, f"Invalid messages: {exc}", param="messages",
                       code="invalid_value") from None


def _stop(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """OpenAI's ``stop`` (null, a string or an array of strings; empty strings mean nothing)."""
    stop = payload.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(s for s in stop if s)
    raise ApiError(400, "stop must be a string or an array of strings", param="stop",
                   code="invalid_type")


# The error code a SamplingParams check failing on a request field answers with.
_SAMPLING_CODES = {"max_tokens": "invalid_value", "temperature": "invalid_value",
                   "top_p": "invalid_value", "stop": "invalid_value", "seed": "invalid_type"}


def _sampling(payload: Mapping[str, Any], default_max_tokens: int) -> SamplingParams:
    """:class:`SamplingParams` from the request: its checks, attributed to the request field."""
    max_param = ("max_completion_tokens" if payload.get("max_completion_tokens") is not None
                 else "max_tokens")
    max_tokens = payload.get(max_param)
    # SamplingParams field -> (request field, value); null means the default. Values are the
    # request's JSON as sent: SamplingParams checks them.
    requested: dict[str, tuple[str, Any]] = {
        "max_tokens": (max_param, default_max_tokens if max_tokens is None else max_tokens),
        "temperature": ("temperature", payload.get("temperature")),
        "top_p": ("top_p", payload.get("top_p")),
        "stop": ("stop", _stop(payload)),
        "seed": ("seed", payload.get("seed")),
    }
    fields = {name: value for name, (_, value) in requested.items() if value is not None}
    for name, value in fields.items():  # one field at a time, so the error names its field
        try:
            SamplingParams(**{name: value})
        except ConfigError as exc:
            raise ApiError(400, str(exc), param=requested[name][0],
                           code=_SAMPLING_CODES[name]) from None
    return SamplingParams(**fields)


def _stream(payload: Mapping[str, Any]) -> tuple[bool, bool]:
    """``(stream, include_usage)``."""
    stream = payload.get("stream")
    if stream is None:
        stream = False
    elif not isinstance(stream, bool):
        raise ApiError(400, "stream must be a boolean", param="stream", code="invalid_type")
    options = payload.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise ApiError(400, "stream_options is only allowed when stream is true",
                       param="stream_options", code="invalid_value")
    if not isinstance(options, Mapping) or not isinstance(options.get("include_usage", False),
                                                           bool):
        raise ApiError(400, "stream_options must be an object like {\"include_usage\": true}",
                       param="stream_options", code="invalid_type")
    return stream, bool(options.get("include_usage", False))


def _check_supported(payload: Mapping[str, Any]) -> None:
    """Refuse what a single local model without tool calling cannot honour."""
    n = payload.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise ApiError(400, "this server generates one choice per request (n must be 1)",
                       param="n", code="unsupported_value")
    if payload.get("tools"):
        raise ApiError(400, "tools are not supported by this server (the local model has no "
                       "tool calling); send tool results as messages instead", param="tools",
                       code="unsupported_parameter")
    if payload.get("logprobs"):
        raise ApiError(400, "logprobs are not supported by this server", param="logprobs",
                       code="unsupported_parameter")
    for name in ("presence_penalty", "frequency_penalty"):
        value = payload.get(name)
        if value is not None and (not _is_number(value) or not -2 <= value <= 2):
            raise ApiError(400, f"{name} must be a number between -2 and 2", param=name,
                           code="invalid_value")
    response_format = payload.get("response_format")
    if response_format is not None and (not isinstance(response_format, Mapping)
                                        or response_format.get("type") != "text"):
        raise ApiError(400, "only response_format {\"type\": \"text\"} is supported",
                       param="response_format", code="unsupported_value")


def parse_chat_request(payload: Any, *, models: tuple[str, ...], default_max_tokens: int,
                       prepare: Callable[[list[Any]], list[Message]] | None = None,
                       forward: bool = False) -> ChatRequest:
    """Validate a decoded JSON body; raise :class:`ApiError` (400 / 404) on any problem.

    With ``forward`` (a gateway in front of another server) fields this module does not use
    are kept in ``extra`` for the upstream to judge, instead of being checked here."""
    if not isinstance(payload, Mapping):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_type")
    unknown = sorted(set(payload) - _KNOWN_FIELDS)
    if unknown and not forward:
        raise ApiError(400, f"Unrecognized request argument supplied: {', '.join(unknown)}",
                       param=unknown[0], code="unknown_parameter")
    model = _model(payload, models)
    messages = _messages(payload, prepare)
    params = _sampling(payload, default_max_tokens)
    stream, include_usage = _stream(payload)
    if not forward:
        _check_supported(payload)
    extra = {key: value for key, value in payload.items() if key not in _REWRITTEN_FIELDS}
    return ChatRequest(model=model, messages=messages, params=params, stream=stream,
                       include_usage=include_usage, extra=extra if forward else {})
