"""Label Studio's brush RLE, encoded and decoded with bounded memory.

Why not label-studio-sdk's ``decode_rle`` / ``mask2rle``: its decoder allocates the value count
that the stream's 32-bit header declares (up to 4 G values) before anything is checked, so an
851 KB request could make a worker touch 3.25 GiB; and both work on the RGBA-expanded array
(4 bytes a pixel, plus comparison temporaries), ~400 MB of temporaries for a 40 MP mask. Here
the header is checked against the result's own size and a pixel bound *before* anything is
allocated, and only the alpha channel (one bool a pixel) is ever materialised. The bit format
is the SDK's (``tests/backend/test_rle.py`` checks the two agree byte for byte).

Format: 32 bits value count (= 4 x pixels, RGBA), 5 bits word size - 1, 4 x 4 bits run-length
field sizes - 1; then records: 1 bit (1: a run of one value, 0: literal values), 2 bits which
field size, that many bits count - 1, then one word (run) or count words (literals).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import TaskError

# the same bound as CAMCUT_MAX_PIXELS' default, for callers that have no settings at hand
DEFAULT_MAX_PIXELS = 40_000_000
_SIZES = (3, 4, 8, 16)  # the run-length field sizes the SDK (and LS's front end) write


def encode(mask: np.ndarray) -> list[int]:
    """A 2-D bool mask -> LS brush RLE bytes (RGBA, every channel 255 inside the mask)."""
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    n = flat.size
    header = f"{4 * n:032b}{8 - 1:05b}" + "".join(f"{s - 1:04b}" for s in _SIZES)
    parts = [header]
    if n:
        starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
        lengths = np.diff(np.append(starts, n)) * 4  # a pixel is 4 equal RGBA values
        for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
            value = "11111111" if flat[start] else "00000000"
            # RGBA runs are >= 4 long, so never the SDK's length-1 literal record
            if length <= 8:
                parts.append(f"100{length - 1:03b}{value}")
            elif length <= 16:
                parts.append(f"101{length - 1:04b}{value}")
            elif length <= 256:
                parts.append(f"110{length - 1:08b}{value}")
            else:
                while length > 2**16:
                    parts.append(f"111{2**16 - 1:016b}{value}")
                    length -= 2**16
                parts.append(f"111{length - 1:016b}{value}")
    bits = "".join(parts)
    bits += "0" * (8 - len(bits) % 8)  # the SDK pads with 1..8 zero bits (8 when already aligned)
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))


def declared_values(rle: Sequence[int]) -> int:
    """The value count in the stream's header (4 x pixels for an RGBA brush)."""
    _check_bytes(rle[:4])
    if len(rle) < 4:
        raise TaskError(f"brush RLE of {len(rle)} bytes has no header")
    return int.from_bytes(bytes(rle[:4]), "big")


def decode(rle: Sequence[int], height: int, width: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """LS brush RLE of a ``width`` x ``height`` result -> its bool mask (alpha > 0).

    Refused with a TaskError, before any allocation of the image's size: a size over
    ``max_pixels``, a header whose value count is not 4 x width x height, values that are not
    bytes, a stream that ends before the declared count."""
    if not (isinstance(height, int) and isinstance(width, int)) or height <= 0 or width <= 0:
        raise TaskError(f"brush result size {width!r}x{height!r} is not two positive integers")
    if height * width > max_pixels:
        raise TaskError(f"brush result of {width}x{height} = {width * height} pixels is over the limit of {max_pixels}")
    num = declared_values(rle)
    if num != 4 * height * width:
        raise TaskError(f"brush RLE header declares {num} values, expected {width}x{height}x4 = {4 * width * height}")
    _check_bytes(rle)
    bits = "".join(f"{b:08b}" for b in rle)
    end = len(bits)
    pos = 32

    def read(size: int) -> int:
        nonlocal pos
        if pos + size > end:
            raise TaskError(f"brush RLE ends before its declared {num} values")
        v = int(bits[pos : pos + size], 2)
        pos += size
        return v

    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(height * width, bool)  # alpha channel only: value k of the stream is channel k % 4 of pixel k // 4
    i = 0
    while i < num:
        is_run = read(1)
        j = min(num, i + 1 + read(sizes[read(2)]))
        if is_run:
            if read(word):
                out[i // 4 : j // 4] = True  # pixels p with i <= 4p + 3 < j
            i = j
        else:
            while i < j:  # each literal costs `word` bits of input: bounded by the request size
                v = read(word)
                if i % 4 == 3:
                    out[i // 4] = v > 0
                i += 1
    return out.reshape(height, width)


def _check_bytes(values: Sequence[int]) -> None:
    ok = isinstance(values, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 256 for v in values
    )
    if not ok:
        raise TaskError("brush RLE must be a list of byte values (integers 0..255)")
