"""What an image costs in prompt tokens, by OpenAI's published rules for each model family.

Source: OpenAI's vision guide, "Calculating costs"
(https://platform.openai.com/docs/guides/images-vision#calculating-costs). Two formulas:

* ``tiles`` (GPT-4o, GPT-4.1, GPT-4.5, GPT-5, o1, o3, gpt-4-turbo): ``detail="low"`` costs the
  base tokens; otherwise the image is scaled to fit in 2048 x 2048, then so that its shortest
  side is 768 px, and each 512-px tile costs the tile tokens, plus the base. Scaling only ever
  shrinks an image (a 128 x 64 image is one tile, as the API bills it).
* ``patches`` (gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini): the 32-px patches that cover the
  image, shrunk to at most 1,536 patches if needed, times the model's multiplier (rounded up).
  ``detail`` does not change the cost.

``detail="auto"`` lets the API choose; we count it as ``high``, which never under-counts. An
image whose size we cannot read (a remote URL: nothing is downloaded) is counted at the most its
detail level can cost. Sizes of data-URL images are read from the image header with Pillow
(the ``images`` extra); without Pillow they are counted at that maximum too.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

from .errors import InvalidMessageError

MAX_PATCHES = 1536
PATCH = 32
TILE = 512


@dataclass(frozen=True, slots=True)
class ImagePricing:
    """One model family's image rule: ``rule`` names a formula in :data:`RULES`."""

    rule: str
    base: int = 0
    tile: int = 0
    multiplier: float = 1.0

    def tokens(self, size: tuple[int, int] | None, detail: str = "auto") -> int:
        """Tokens of one image of ``size`` (width, height); ``None`` means unknown."""
        return RULES[self.rule](self, size, detail)


def _tile_tokens(pricing: ImagePricing, size: tuple[int, int] | None, detail: str) -> int:
    if detail == "low":
        return pricing.base
    if size is None:  # at most 2 x 4 tiles: the short side ends <= 768 px, the long <= 2048
        return pricing.base + 8 * pricing.tile
    scale = min(1.0, 2048 / max(size))
    width, height = size[0] * scale, size[1] * scale
    scale = min(1.0, 768 / min(width, height))
    width, height = width * scale, height * scale
    tiles = _cover(width, TILE) * _cover(height, TILE)
    return pricing.base + tiles * pricing.tile


def _patch_tokens(pricing: ImagePricing, size: tuple[int, int] | None, detail: str) -> int:
    patches = MAX_PATCHES if size is None else min(MAX_PATCHES, _patches(*size))
    return math.ceil(patches * pricing.multiplier - 1e-9)


def _patches(width: int, height: int) -> int:
    """The guide's patch count, with its shrink step for images over the cap."""
    if _cover(width, PATCH) * _cover(height, PATCH) <= MAX_PATCHES:
        return _cover(width, PATCH) * _cover(height, PATCH)
    shrink = math.sqrt(PATCH * PATCH * MAX_PATCHES / (width * height))
    fit_w, fit_h = width * shrink / PATCH, height * shrink / PATCH
    shrink *= min(math.floor(fit_w) / fit_w, math.floor(fit_h) / fit_h)
    return _cover(width * shrink, PATCH) * _cover(height * shrink, PATCH)


def _cover(length: float, step: int) -> int:
    """How many ``step``-px squares cover ``length`` px (float-safe ceil)."""
    return math.ceil(length / step - 1e-9)


RULES: dict[str, Callable[[ImagePricing, tuple[int, int] | None, str], int]] = {
    "tiles": _tile_tokens,
    "patches": _patch_tokens,
}

DEFAULT_PRICING = ImagePricing("tiles", base=85, tile=170)

# Model-name prefixes, most specific first (the guide's tables).
_MODEL_PRICING: tuple[tuple[str, ImagePricing], ...] = (
    ("gpt-4o-mini", ImagePricing("tiles", base=2833, tile=5667)),
    ("gpt-4.1-mini", ImagePricing("patches", multiplier=1.62)),
    ("gpt-4.1-nano", ImagePricing("patches", multiplier=2.46)),
    ("gpt-5-mini", ImagePricing("patches", multiplier=1.62)),
    ("gpt-5-nano", ImagePricing("patches", multiplier=2.46)),
    ("o4-mini", ImagePricing("patches", multiplier=1.72)),
    ("gpt-5", ImagePricing("tiles", base=70, tile=140)),
    ("o1", ImagePricing("tiles", base=75, tile=150)),
    ("o3", ImagePricing("tiles", base=75, tile=150)),
    ("computer-use-preview", ImagePricing("tiles", base=65, tile=129)),
)


def pricing_for_model(model: str) -> ImagePricing:
    """The image rule of an OpenAI model; GPT-4o's for families the guide does not list."""
    for prefix, pricing in _MODEL_PRICING:
        if model == prefix or model.startswith((prefix + "-", prefix + ".")):
            return pricing
    return DEFAULT_PRICING


def image_size(url: str) -> tuple[int, int] | None:
    """(width, height) of a ``data:image/...;base64,`` URL, read from its header; None for a
    remote URL or when Pillow is not installed. A data URL that is not an image is refused:
    the API would reject it."""
    if not url.startswith("data:"):
        return None
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        return None
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise InvalidMessageError("an image data URL must be base64-encoded")
    try:
        with Image.open(io.BytesIO(base64.b64decode(payload, validate=True))) as image:
            return image.size
    except Image.DecompressionBombError:  # too many pixels to trust: count the maximum
        return None
    except (binascii.Error, UnidentifiedImageError, ValueError) as exc:
        raise InvalidMessageError(f"the image data URL is not a readable image: {exc}") from None
