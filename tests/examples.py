"""The OpenAI cookbook's tool-calling example, defined once for every test that uses it.

The API reported 101 prompt tokens for it on gpt-4o and 105 on gpt-4; ``tests/test_tokens.py``
pins those figures and ``tests/test_readme.py`` feeds the same data to the README's snippets.
"""

from __future__ import annotations

from typing import Any

WEATHER_MESSAGES: list[dict[str, Any]] = [
    {"role": "system",
     "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]
WEATHER_TOOLS: list[dict[str, Any]] = [{
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string",
                             "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "description": "The unit of temperature to return",
                         "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}]
