"""CVAT hands images as PIL images (cvat-sdk) or base64 strings (nuclio): both -> RGB uint8."""

from __future__ import annotations

import base64
import binascii

import numpy as np
import PIL.Image

from model import ImageError, decode_image, to_rgb_uint8


def from_pil(image: PIL.Image.Image) -> np.ndarray:
    try:
        if image.mode not in ("RGB", "RGBA", "L", "I;16", "I", "F"):
            image = image.convert("RGB")
        return to_rgb_uint8(np.asarray(image))
    except (OSError, ValueError) as exc:  # a truncated or undecodable frame
        raise ImageError(f"frame is not a usable image: {exc}") from exc


def from_base64(data: object) -> np.ndarray:
    if not isinstance(data, str) or not data:
        raise ImageError("'image' must be a non-empty base64 string")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"'image' is not base64: {exc}") from exc
    return decode_image(raw)
