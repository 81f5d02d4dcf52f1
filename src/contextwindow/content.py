"""Prompt tokens of content parts, one formula per part type (a registry keyed by ``type``).

Text-like parts (OpenAI ``text`` and ``refusal``, LangChain ``reasoning``, bare strings) cost
their tokens; images (OpenAI ``image_url``, LangChain ``image``) cost what
:mod:`contextwindow.images` says for the model. Parts we cannot price from their content (audio,
files, video, ...) are refused with an error that names the part: counting them as zero would
let a conversation go over budget, which is what this library exists to prevent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import InvalidMessageError
from .images import ImagePricing, image_size
from .messages import Message, part_text

CountText = Callable[[str], int]


def _text(key: str) -> Callable[[Mapping[str, Any], CountText, ImagePricing], int]:
    def price(part: Mapping[str, Any], count_text: CountText, pricing: ImagePricing) -> int:
        return count_text(str(part.get(key) or ""))
    return price


def _openai_image(part: Mapping[str, Any], count_text: CountText, pricing: ImagePricing) -> int:
    image = part.get("image_url")
    if isinstance(image, str):  # LangChain's older shorthand
        image = {"url": image}
    if not isinstance(image, Mapping) or not isinstance(image.get("url"), str):
        raise InvalidMessageError("an image_url part needs image_url.url")
    return pricing.tokens(image_size(image["url"]), str(image.get("detail") or "auto"))


def _langchain_image(part: Mapping[str, Any], count_text: CountText,
                     pricing: ImagePricing) -> int:
    """LangChain's standard image block: ``url``, or ``base64`` with ``mime_type`` (v1), or
    ``source_type`` + ``data`` / ``url`` (0.3)."""
    data = part.get("base64") or (part.get("data") if part.get("source_type") == "base64" else None)
    mime = part.get("mime_type") or "image/png"
    url = f"data:{mime};base64,{data}" if data else part.get("url")
    size = image_size(url) if isinstance(url, str) else None  # a file id: size unknown
    return pricing.tokens(size, str(part.get("detail") or "auto"))


PART_PRICES: dict[str, Callable[[Mapping[str, Any], CountText, ImagePricing], int]] = {
    "text": _text("text"),
    "refusal": _text("refusal"),
    "reasoning": _text("reasoning"),
    "image_url": _openai_image,
    "image": _langchain_image,
}


def price_parts(parts: list[Any], count_text: CountText, pricing: ImagePricing) -> int:
    """Tokens of a content list; the error names the part that cannot be priced."""
    total = 0
    for position, part in enumerate(parts):
        if isinstance(part, str):
            total += count_text(part)
            continue
        kind = part.get("type")
        price = PART_PRICES.get(kind)
        if price is None:
            raise InvalidMessageError(
                f"content part {position} ({kind!r}) cannot be counted: only "
                f"{', '.join(PART_PRICES)} parts have a published token rule")
        try:
            total += price(part, count_text, pricing)
        except InvalidMessageError as exc:
            raise InvalidMessageError(f"content part {position} ({kind!r}): {exc}") from None
    return total


def check_text_only(messages: Sequence[Message]) -> None:
    """Refuse parts a text-only (local) model cannot read: dropping an image silently would
    answer a different question than the one asked."""
    for index, message in enumerate(messages):
        for position, part in enumerate(message.content_parts or ()):
            if part_text(part) is None:
                raise InvalidMessageError(
                    f"message {index}: content part {position} ({part.get('type')!r}) cannot be "
                    "read by this text-only model: send text parts only")
