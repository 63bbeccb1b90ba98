"""Decoding and normalising input images to 8-bit RGB, with clear errors for bad input."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse images whose *declared* size exceeds this many pixels before decoding them
# (decompression bombs). 40 MP covers a 50-megapixel-class camera after EXIF rotation. Entry
# points pass ``CAMCUT_MAX_PIXELS`` down as ``max_pixels``; this module never reads the environment.
DEFAULT_MAX_PIXELS = 40_000_000
MAX_PIXELS_ENV = "CAMCUT_MAX_PIXELS"


class ImageError(ValueError):
    """The input is not a usable image (unreadable, empty, too large, wrong shape)."""


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return an (H, W, 3) uint8 RGB copy of a grey, grey+alpha, RGB or RGBA array.

    16-bit input is scaled by 1/257; float input is taken as [0, 1]. Alpha is dropped (not
    composited): the annotator sees the colour channels, and so should the model.
    """
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"expected an HxW, HxWx1/2/3/4 image, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(f"empty image of shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a.astype(np.uint32) * 255 + 32767) // 65535
        a = a.astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ImageError("image contains NaN or infinite values")
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        a = np.clip(a.astype(np.int64) * (255 if a.dtype == np.bool_ else 1), 0, 255).astype(np.uint8)
    else:
        raise ImageError(f"unsupported image dtype {a.dtype}")
    c = a.shape[2]
    if c in (1, 2):
        a = np.repeat(a[:, :, :1], 3, axis=2)
    elif c == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def decode_image(data: bytes | str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a file path or encoded bytes to (H, W, 3) uint8 RGB, honouring EXIF orientation.

    Animated images give their first frame. Raises :class:`ImageError` for anything else.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) == 0:
            raise ImageError("empty image data (0 bytes)")
        src: io.BytesIO | Path = io.BytesIO(bytes(data))
        label = f"<{len(data)} bytes>"
    else:
        src = Path(data)
        label = str(src)
        if not src.is_file():
            raise ImageError(f"image file not found: {label}")
        if src.stat().st_size == 0:
            raise ImageError(f"empty image file (0 bytes): {label}")
    try:
        with Image.open(src) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"image {label} is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")
            im.seek(0)
            pic: Image.Image = ImageOps.exif_transpose(im)
            if pic.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(pic, dtype=np.uint32)
                peak = 65535 if pic.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
                arr = (arr.astype(np.float64) / peak).astype(np.float32)
                return to_rgb_uint8(arr)
            if pic.mode not in ("RGB", "L", "RGBA", "LA"):
                pic = pic.convert("RGBA" if "A" in pic.getbands() or "transparency" in pic.info else "RGB")
            pic.load()
            return to_rgb_uint8(np.asarray(pic))
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageError(f"not a readable image: {label}: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise ImageError(f"corrupt or truncated image {label}: {exc}") from exc


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A bool mask resized to ``height`` x ``width`` by nearest neighbour (a mask stays a mask),
    e.g. a brush mask drawn on Label Studio's ``original_width`` x ``original_height``."""
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
