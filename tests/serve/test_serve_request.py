"""Request parsing without a server: SamplingParams' checks surface as 400s naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from contextwindow.generation import SamplingParams
from contextwindow.serve import ApiError, ChatRequest, parse_chat_request

USER = [{"role": "user", "content": "hi"}]


def parse(**fields: Any) -> ChatRequest:
    return parse_chat_request({"model": "m", "messages": USER, **fields}, models=("m",),
                              default_max_tokens=33)


def test_defaults_and_values_reach_sampling_params() -> None:
    assert parse().params == SamplingParams(max_tokens=33)
    request = parse(max_tokens=5, max_completion_tokens=7, temperature=0, top_p=None,
                    stop=["", "END"], seed=3, stream=True, stream_options={"include_usage": True})
    assert request.params == SamplingParams(max_tokens=7, temperature=0.0, top_p=1.0,
                                            stop=("END",), seed=3)
    assert type(request.params.temperature) is float
    assert (request.stream, request.include_usage) == (True, True)
    assert parse(stop="x").params.stop == ("x",)


@pytest.mark.parametrize(("fields", "param", "code", "message"), [
    ({"max_completion_tokens": 0}, "max_completion_tokens", "invalid_value",
     "max_tokens must be an integer >= 1, not 0"),
    ({"max_tokens": True}, "max_tokens", "invalid_value", "max_tokens must be an integer >= 1"),
    ({"temperature": "hot"}, "temperature", "invalid_value", "temperature must be a number"),
    ({"top_p": float("nan")}, "top_p", "invalid_value", "top_p must be a number in [0, 1]"),
    ({"stop": list("abcde")}, "stop", "invalid_value", "stop must be up to 4 non-empty strings"),
    ({"stop": [1]}, "stop", "invalid_type", "stop must be a string or an array of strings"),
    ({"seed": "7"}, "seed", "invalid_type", "seed must be an integer, not '7'"),
])
def test_a_bad_sampling_field_is_a_400_naming_it(fields: dict[str, Any], param: str, code: str,
                                                 message: str) -> None:
    with pytest.raises(ApiError) as info:
        parse(**fields)
    error = info.value
    assert (error.status, error.param, error.code) == (400, param, code)
    assert error.message.startswith(message)
