"""Image and content-part token rules, checked against the figures OpenAI's vision guide gives."""

from __future__ import annotations

import base64
import io
import sys

import pytest
from PIL import Image

from contextwindow import InvalidMessageError, TokenBufferMemory, TokenCounter, trim
from contextwindow.images import DEFAULT_PRICING, ImagePricing, image_size, pricing_for_model

GPT_4O = TokenCounter.for_model("gpt-4o")


def png_url(width: int, height: int, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, fmt)
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(("size", "detail", "tokens"), [
    ((1024, 1024), "high", 765),   # the guide: 768x768 after scaling, 4 tiles
    ((2048, 4096), "high", 1105),  # the guide: 1024x2048 -> 768x1536, 6 tiles
    ((4096, 8192), "low", 85),     # the guide: low detail is the base cost, whatever the size
    ((128, 64), "high", 255),      # never scaled up: one tile
    ((1024, 1024), "auto", 765),   # auto counted as high
    (None, "high", 85 + 8 * 170),  # size unknown: the most high detail can cost
    (None, "low", 85),
])
def test_tile_rule_matches_the_guide(size, detail, tokens) -> None:
    assert DEFAULT_PRICING.tokens(size, detail) == tokens


@pytest.mark.parametrize(("size", "tokens"), [
    ((1024, 1024), 1024),  # the guide: 32 x 32 patches
    ((1800, 2400), 1452),  # the guide: shrunk to 1056 x 1408, 33 x 44 patches
    ((10000, 10000), 1521),  # shrunk under the cap: 39 x 39 patches
    (None, 1536),
])
def test_patch_rule_matches_the_guide(size, tokens) -> None:
    assert ImagePricing("patches").tokens(size) == tokens
    assert ImagePricing("patches").tokens(size, "low") == tokens  # detail does not matter


@pytest.mark.parametrize(("model", "size", "detail", "tokens"), [
    ("gpt-4o-mini-2024-07-18", (1024, 1024), "high", 2833 + 4 * 5667),
    ("gpt-4o-mini", (1024, 1024), "low", 2833),
    ("gpt-4.1-mini", (1024, 1024), "high", 1659),  # 1024 patches x 1.62, rounded up
    ("gpt-4.1-nano", (1024, 1024), "high", 2520),  # x 2.46, rounded up
    ("o4-mini", (1800, 2400), "high", 2498),       # 1452 x 1.72
    ("o3", (1024, 1024), "high", 75 + 4 * 150),
    ("gpt-5", (1024, 1024), "high", 70 + 4 * 140),
    ("gpt-4.1", (1024, 1024), "high", 765),
    ("gpt-4-turbo", (1024, 1024), "low", 85),
])
def test_each_model_family_uses_its_rule(model, size, detail, tokens) -> None:
    assert pricing_for_model(model).tokens(size, detail) == tokens


def test_data_url_sizes_are_read_from_the_header() -> None:
    assert image_size(png_url(300, 200)) == (300, 200)
    assert image_size(png_url(64, 48, "JPEG")) == (64, 48)
    assert image_size("https://example.org/cat.png") is None
    with pytest.raises(InvalidMessageError, match="not a readable image"):
        image_size("data:image/png;base64," + base64.b64encode(b"not a png").decode())


def test_a_message_with_an_image_counts_text_framing_and_image() -> None:
    parts = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": png_url(2048, 4096), "detail": "high"}}]
    expected = 3 + GPT_4O.count_text("user") + GPT_4O.count_text("What is this?") + 1105
    assert GPT_4O.count_message({"role": "user", "content": parts}) == expected
    langchain_block = {"type": "image", "base64": png_url(2048, 4096).partition(",")[2],
                       "mime_type": "image/png"}
    assert GPT_4O.count_message({"role": "user", "content": [langchain_block]}) == (
        3 + GPT_4O.count_text("user") + 1105)


def test_text_parts_are_kept_as_given_and_counted_each() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    message = {"role": "user", "content": parts}
    assert trim([message], 100, GPT_4O) == [message]
    memory = TokenBufferMemory(100, counter=GPT_4O)
    memory.add_message(message)
    assert memory.to_openai() == [message]
    assert memory.messages()[0].content == "a\nb"  # the text, for summarizers and previews
    assert GPT_4O.count_message(message) == 3 + 1 + 1 + 1


@pytest.mark.parametrize("part", [
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    {"type": "file", "file": {"file_id": "file-1"}},
])
def test_parts_without_a_published_rule_are_refused_by_name(part) -> None:
    conversation = [{"role": "user", "content": "hi"},
                    {"role": "user", "content": [{"type": "text", "text": "x"}, part]}]
    with pytest.raises(InvalidMessageError,
                       match=rf"message 1: content part 1 \('{part['type']}'\) cannot be counted"):
        trim(conversation, 1000, GPT_4O)
    memory = TokenBufferMemory(1000, counter=GPT_4O)
    with pytest.raises(InvalidMessageError, match="content part 1"):
        memory.add_message(conversation[1])
    assert len(memory) == 0


def test_without_pillow_a_data_url_image_costs_the_maximum(monkeypatch) -> None:
    url = png_url(1024, 1024)
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    assert image_size(url) is None
    part = {"type": "image_url", "image_url": {"url": url}}
    assert GPT_4O.count_message({"role": "user", "content": [part]}) == 3 + 1 + 85 + 8 * 170
