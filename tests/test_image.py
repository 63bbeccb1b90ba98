"""decode_image / to_rgb_uint8 (model/image.py) on real and deliberately broken inputs."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.image import ImageError, decode_image, to_rgb_uint8

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VOC_JPEG = SHARED / "voc2012" / "VOC2012" / "JPEGImages" / "2007_000032.jpg"


@pytest.fixture(scope="module")
def jpeg_bytes() -> bytes:
    return VOC_JPEG.read_bytes()


def _png(arr_or_img, **kw) -> bytes:
    im = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _png_with_declared_size(w: int, h: int) -> bytes:
    """A tiny PNG whose IHDR claims w x h (8-bit RGB) with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


# -- good input --------------------------------------------------------------------------------
def test_real_jpeg_bytes_and_path_agree(jpeg_bytes):
    a = decode_image(jpeg_bytes)
    b = decode_image(VOC_JPEG)
    c = decode_image(str(VOC_JPEG))
    with Image.open(VOC_JPEG) as im:
        ref = np.asarray(im.convert("RGB"))
    assert a.dtype == np.uint8 and a.shape == ref.shape and a.shape[2] == 3
    assert a.shape[:2] == (281, 500)  # 2007_000032 is 500 x 281
    assert np.array_equal(a, ref) and np.array_equal(a, b) and np.array_equal(a, c)
    assert a.flags["C_CONTIGUOUS"]
    assert 20 < a.mean() < 235  # a photo, not a blank


def test_bytearray_and_memoryview(jpeg_bytes):
    a = decode_image(jpeg_bytes)
    assert np.array_equal(decode_image(bytearray(jpeg_bytes)), a)
    assert np.array_equal(decode_image(memoryview(jpeg_bytes)), a)


def _exif_jpeg(orientation: int) -> bytes:
    arr = np.zeros((20, 40, 3), np.uint8)  # H 20, W 40: left half red, right half blue
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def test_exif_orientation_6_is_applied():
    out = decode_image(_exif_jpeg(6))
    assert out.shape == (40, 20, 3)  # transposed
    # Orientation 6 = rotate 90 degrees clockwise for display: the stored left (red) half is on top.
    top, bottom = out[:15].reshape(-1, 3).mean(0), out[25:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_exif_orientation_1_is_unchanged():
    out = decode_image(_exif_jpeg(1))
    assert out.shape == (20, 40, 3)
    assert out[:, :15, 0].mean() > 200 and out[:, 25:, 2].mean() > 200


def test_grey_png():
    g = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)
    out = decode_image(_png(g))
    assert out.shape == (12, 20, 3)
    for c in range(3):
        assert np.array_equal(out[:, :, c], g)


def test_la_png():
    la = np.zeros((8, 9, 2), np.uint8)
    la[..., 0] = np.arange(72, dtype=np.uint8).reshape(8, 9) * 3
    la[..., 1] = 17
    im = Image.fromarray(la)
    data = _png(im)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "LA"
    out = decode_image(data)
    assert out.shape == (8, 9, 3)
    assert np.array_equal(out[:, :, 1], la[..., 0])


def test_rgba_png_drops_alpha():
    rgba = np.zeros((6, 7, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 200, 30, 0  # fully transparent
    out = decode_image(_png(rgba))
    assert out.shape == (6, 7, 3)
    assert np.all(out == np.array([10, 200, 30], np.uint8))


def test_16bit_png():
    v = (np.arange(30, dtype=np.uint16).reshape(5, 6) * 2000).astype(np.uint16)
    v[0, 0], v[0, 1], v[0, 2] = 0, 65535, 257 * 100
    data = _png(Image.fromarray(v))
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode.startswith("I")
    out = decode_image(data)
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255 and out[0, 2, 0] == 100
    expected = np.rint(v.astype(np.float64) / 65535 * 255).astype(np.uint8)
    assert np.abs(out[..., 0].astype(int) - expected).max() <= 1


def test_palette_png_with_transparency():
    im = Image.new("P", (5, 4))
    im.putpalette([0, 0, 0, 250, 10, 20] + [0] * 762)
    im.paste(1, (0, 0, 5, 4))
    im.info["transparency"] = 0
    out = decode_image(_png(im, transparency=0))
    assert out.shape == (4, 5, 3)
    assert np.all(out == np.array([250, 10, 20], np.uint8))


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 3
    out = decode_image(data)
    assert out.shape == (10, 16, 3)
    assert np.all(out == np.array([255, 0, 0], np.uint8))


def test_cmyk_jpeg_becomes_rgb():
    im = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95)
    out = decode_image(buf.getvalue())
    assert out.shape == (8, 8, 3)
    r, g, b = out.reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


# -- bad input ----------------------------------------------------------------------------------
def test_zero_bytes():
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")


def test_zero_byte_file_and_missing_file(tmp_path):
    f = tmp_path / "empty.jpg"
    f.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        decode_image(f)
    with pytest.raises(ImageError, match="not found"):
        decode_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="not found"):
        decode_image(tmp_path)  # a directory is not an image file


@pytest.mark.parametrize("frac", [0.5, 0.1])
def test_truncated_jpeg(jpeg_bytes, frac):
    with pytest.raises(ImageError, match=r"corrupt or truncated|not a readable") as ei:
        decode_image(jpeg_bytes[: int(len(jpeg_bytes) * frac)])
    assert "bytes>" in str(ei.value)


def test_random_bytes():
    rnd = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(rnd)


def test_text_file_is_not_an_image(tmp_path):
    f = tmp_path / "notes.png"
    f.write_text("hello, I am not a PNG")
    with pytest.raises(ImageError, match="not a readable image") as ei:
        decode_image(f)
    assert str(f) in str(ei.value)


def test_declared_size_over_limit_is_refused_before_decoding():
    # 48 MP declared in a ~70-byte file: over camcut's 40 MP limit, under PIL's own bomb limit,
    # so it is camcut's check that must refuse it.
    data = _png_with_declared_size(8_000, 6_000)
    assert len(data) < 200
    with pytest.raises(ImageError, match=r"8000x6000 = 48000000 pixels, over the limit of 40000000"):
        decode_image(data, max_pixels=40_000_000)


def test_max_pixels_small_refuses_real_jpeg(jpeg_bytes):
    with pytest.raises(ImageError, match=r"500x281 = 140500 pixels, over the limit of 140499"):
        decode_image(jpeg_bytes, max_pixels=140_499)
    assert decode_image(jpeg_bytes, max_pixels=140_500).shape == (281, 500, 3)


def test_huge_declared_png_gives_image_error_not_pil_error():
    # Far above PIL's own decompression-bomb limit: must still surface as ImageError.
    with pytest.raises(ImageError):
        decode_image(_png_with_declared_size(100_000, 100_000))


# -- to_rgb_uint8 --------------------------------------------------------------------------------
def test_to_rgb_uint8_conversions():
    g16 = np.array([[0, 65535], [257, 32896]], np.uint16)
    out = to_rgb_uint8(g16)
    assert out.shape == (2, 2, 3) and out[..., 0].tolist() == [[0, 255], [1, 128]]
    f = np.array([[0.0, 1.0], [0.5, 2.0]], np.float32)
    assert to_rgb_uint8(f)[..., 2].tolist() == [[0, 255], [128, 255]]
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[..., 0] = 9
    assert to_rgb_uint8(rgba)[..., 0].tolist() == [[9] * 3] * 3
    assert to_rgb_uint8(np.ones((2, 2), bool)).max() == 255


@pytest.mark.parametrize(
    "arr, msg",
    [
        (np.zeros((4, 4, 5), np.uint8), "expected"),
        (np.zeros((4,), np.uint8), "expected"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.array([[np.nan, 0.5]], np.float32), "NaN"),
        (np.zeros((2, 2), np.complex64), "dtype"),
    ],
)
def test_to_rgb_uint8_errors(arr, msg):
    with pytest.raises(ImageError, match=msg):
        to_rgb_uint8(arr)
