"""decode_image: format sniffing, header-first size checks, bombs, corrupt files, colour modes.

All images are real files written by Pillow or hand-crafted headers; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from flashvl.config import Settings
from flashvl.errors import MediaError
from flashvl.media import decode_image, sniff_format


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` but whose data is a few bytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + checksum

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def gif_with_growing_frame(frame_side: int) -> bytes:
    """A 10x10 GIF whose first frame descriptor claims frame_side x frame_side."""
    header = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, frame_side, frame_side, 0) + b"\x02\x02\x44\x01\x00;"
    return header + frame


def refusal(data: bytes, settings: Settings | None = None) -> MediaError:
    with pytest.raises(MediaError) as caught:
        decode_image(data, settings or Settings(), "upload")
    return caught.value


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
def test_each_accepted_format_decodes_to_rgb_with_its_hash(photo: Image.Image, fmt: str) -> None:
    data = encode(photo, fmt)
    loaded = decode_image(data, Settings(), "base64")
    assert sniff_format(data) == fmt
    assert (loaded.format, loaded.width, loaded.height, loaded.image.mode) == (fmt, 64, 48, "RGB")
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert (loaded.nbytes, loaded.source) == (len(data), "base64")


def test_empty_input_is_refused() -> None:
    error = refusal(b"")
    assert (error.code, error.status) == ("empty_image", 400)


def test_text_is_refused_whatever_the_client_called_it() -> None:
    error = refusal(b"hello, I am an image/png, honest\n" * 4)
    assert (error.code, error.status) == ("unsupported_format", 415)
    assert "JPEG, PNG, WEBP, BMP, GIF" in error.message


def test_tiff_is_refused_although_pillow_could_read_it(photo: Image.Image) -> None:
    error = refusal(encode(photo, "TIFF"))
    assert (error.code, error.status) == ("unsupported_format", 415)


def test_format_left_out_of_allowed_formats_is_refused(photo: Image.Image) -> None:
    error = refusal(encode(photo, "GIF"), Settings(allowed_formats=["JPEG", "PNG"]))
    assert error.code == "unsupported_format"
    assert "Accepted formats: JPEG, PNG." in error.message


def test_pixel_bomb_header_is_refused_before_decoding() -> None:
    # 60000x60000 RGB would need ~10 GB; the refusal comes from the header alone.
    error = refusal(png_with_header(60_000, 60_000))
    assert (error.code, error.status) == ("image_too_large_pixels", 413)
    assert "max_image_pixels" in error.message


def test_pixel_limit_applies_below_pillows_own_bomb_threshold(photo: Image.Image) -> None:
    # 64x48 = 3072 pixels: Pillow alone would only warn (below 2x the limit) and decode it.
    error = refusal(encode(photo, "PNG"), Settings(max_image_pixels=2000))
    assert (error.code, error.status) == ("image_too_large_pixels", 413)


def test_webp_canvas_is_checked_before_pillow_allocates_it(photo: Image.Image) -> None:
    # Pillow's WebP plugin allocates the canvas at open; without our header check first this
    # would surface as Pillow's decompression_bomb instead of the pixel limit.
    error = refusal(encode(photo, "WEBP"), Settings(max_image_pixels=1000))
    assert (error.code, error.status) == ("image_too_large_pixels", 413)


def test_absurd_side_is_refused() -> None:
    error = refusal(png_with_header(100_000, 1))
    assert (error.code, error.status) == ("invalid_image_dimensions", 400)


def test_zero_by_zero_image_is_refused() -> None:
    error = refusal(png_with_header(0, 0))
    assert error.status == 400
    assert error.code in ("invalid_image_dimensions", "corrupt_image")


def test_gif_frame_growing_the_canvas_is_a_decompression_bomb() -> None:
    error = refusal(gif_with_growing_frame(60_000))
    assert (error.code, error.status) == ("decompression_bomb", 413)


def test_truncated_jpeg_is_refused(photo: Image.Image) -> None:
    data = encode(photo, "JPEG", quality=90)
    error = refusal(data[: len(data) // 2])
    assert (error.code, error.status) == ("corrupt_image", 400)


def test_corrupt_png_is_refused(photo: Image.Image) -> None:
    data = bytearray(encode(photo, "PNG"))
    data[60:120] = b"\x00" * 60  # smash compressed pixel data
    error = refusal(bytes(data))
    assert (error.code, error.status) == ("corrupt_image", 400)


def test_oversized_bytes_are_refused(photo: Image.Image) -> None:
    data = encode(photo, "PNG")
    error = refusal(data, Settings(max_image_bytes=len(data) - 1))
    assert (error.code, error.status) == ("image_too_large_bytes", 413)


def test_animated_gif_gives_its_first_frame() -> None:
    red, blue = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    loaded = decode_image(data, Settings(), "upload")
    assert loaded.image.getpixel((8, 8)) == (255, 0, 0)


def test_palette_png_with_transparency_becomes_rgb_on_white() -> None:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    image.paste(1, (0, 0, 8, 16))  # left half red, right half index 0 = transparent
    data = encode(image, "PNG", transparency=0)
    loaded = decode_image(data, Settings(), "upload")
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((1, 1)) == (200, 10, 10)
    assert loaded.image.getpixel((12, 12)) == (255, 255, 255)


def test_la_png_is_composited_on_white() -> None:
    image = Image.new("LA", (4, 4), (0, 0))  # black but fully transparent
    loaded = decode_image(encode(image, "PNG"), Settings(), "upload")
    assert loaded.image.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb() -> None:
    image = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    loaded = decode_image(encode(image, "JPEG", quality=95), Settings(), "upload")
    red, green, blue = loaded.image.getpixel((4, 4))
    assert loaded.image.mode == "RGB"
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_gray_png_is_scaled_not_clipped() -> None:
    values = np.repeat(np.array([[0, 32896, 65535]], dtype=np.uint16).repeat(16, axis=1), 16, axis=0)
    data = encode(Image.fromarray(values), "PNG")
    loaded = decode_image(data, Settings(), "upload")
    assert [loaded.image.getpixel((x, 0)) for x in (0, 16, 32)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    loaded = decode_image(encode(image, "JPEG", exif=exif, quality=95), Settings(), "upload")
    assert (loaded.width, loaded.height) == (20, 40)
    top, bottom = loaded.image.getpixel((10, 5)), loaded.image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # stored left (red) is displayed on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_metadata_over_the_cap_is_refused_before_decoding() -> None:
    import io as _io

    from PIL import Image as _Image

    from flashvl.config import Settings as _Settings
    from flashvl.errors import MediaError as _MediaError
    from flashvl.media.decode import decode_image as _decode
    from flashvl.media.decode import metadata_bytes

    buffer = _io.BytesIO()
    _Image.new("RGB", (32, 32), "red").save(buffer, "JPEG")
    plain = buffer.getvalue()
    # Insert three 60 KB COM segments right after SOI.
    comment = b"\xff\xfe" + (60_002).to_bytes(2, "big") + b"x" * 60_000
    bloated = plain[:2] + comment * 3 + plain[2:]
    assert metadata_bytes(bloated, "JPEG") >= 180_000 > metadata_bytes(plain, "JPEG")
    settings = _Settings(max_image_metadata_bytes=100_000)
    _decode(plain, settings, "upload")
    with pytest.raises(_MediaError) as refused:
        _decode(bloated, settings, "upload")
    assert refused.value.code == "image_metadata_too_large" and refused.value.status == 413
    assert _decode(bloated, _Settings(), "upload").width == 32  # under the default 1 MiB cap


def test_tiny_images_are_enlarged_to_the_minimum_side() -> None:
    loaded = decode_image(encode(Image.new("RGB", (1, 3), (9, 99, 199)), "PNG"), Settings(), "upload")
    assert (loaded.width, loaded.height) == (16, 48)
    assert loaded.image.getpixel((15, 47)) == (9, 99, 199)


@pytest.mark.parametrize(
    ("size", "code"), [((1, 60000), "image_aspect_ratio_too_large"), ((0, 0), "invalid_image_dimensions")]
)
def test_header_dimensions_are_checked_before_decoding(size: tuple[int, int], code: str) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", *size, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    assert refusal(data, Settings()).code == code


def test_decoded_memory_is_budgeted_by_mode() -> None:
    image = Image.new("RGBA", (300, 300))
    error = refusal(encode(image, "PNG"), Settings(max_decoded_image_bytes=300 * 300 * 3))
    assert (error.code, error.status) == ("image_too_large_memory", 413)
    gray = Image.new("L", (300, 300))  # 1 byte a pixel: fits
    assert decode_image(encode(gray, "PNG"), Settings(max_decoded_image_bytes=300 * 300 * 3), "upload")
