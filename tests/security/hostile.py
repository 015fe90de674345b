"""Hostile image files, built in memory: each one must be refused with a 4xx before a full decode."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_size(width: int, height: int, idat: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat or zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def small_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


def png_bomb_in_idat() -> bytes:
    """A pixel bomb: ~190 KB of zlib that inflates to 192 MB of pixels (zeros compress ~1000:1)."""
    rows = zlib.compress(b"\0" * (1 + 3 * 8000) * 8000, 9)  # 8000x8000 RGB = 192 MB raw, ~190 KB compressed
    return png_with_size(8000, 8000, rows)


def png_huge_text(megabytes: int = 12) -> bytes:
    """A 16x16 image carrying megabytes of tEXt / zTXt metadata."""
    data = small_png()
    text = _png_chunk(b"tEXt", b"Comment\0" + b"A" * (megabytes * 1024 * 1024))
    ztext = _png_chunk(b"zTXt", b"Bomb\0\0" + zlib.compress(b"B" * (200 * 1024 * 1024), 9))
    return data[:33] + text + ztext + data[33:]


def jpeg_huge_exif(segments: int = 180) -> bytes:
    """A small JPEG with ~11 MB of APP1/COM segments (64 KB each) before the image."""
    data = small_jpeg()
    app = b"\xff\xe1" + struct.pack(">H", 65535) + b"Exif\0\0" + b"\0" * (65535 - 8)
    com = b"\xff\xfe" + struct.pack(">H", 65535) + b"C" * 65533
    return data[:2] + (app + com) * (segments // 2) + data[2:]


def gif_huge_screen() -> bytes:
    return (
        b"GIF89a"
        + struct.pack("<HH", 65535, 65535)
        + b"\xf7\x00\x00"
        + b"\0" * 768
        + b",\0\0\0\0"
        + struct.pack("<HH", 65535, 65535)
        + b"\0\x02\x02\x44\x01\0;"
    )


def jpeg_huge_sof() -> bytes:
    data = bytearray(small_jpeg())
    i = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, 65000, 65000)
    return bytes(data)


def webp_huge_canvas() -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (16383 - 1).to_bytes(3, "little") * 2
    body = b"WEBP" + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bmp_huge() -> bytes:
    header = (
        b"BM"
        + struct.pack("<IHHI", 0, 0, 0, 54)
        + struct.pack("<IiiHHIIiiII", 40, 60000, 60000, 1, 24, 0, 0, 0, 0, 0, 0)
    )
    return header + b"\0" * 64


def polyglot_zip_png() -> bytes:
    """PNG magic followed by a ZIP (and no valid image): a classic polyglot."""
    buf = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("evil.html", "<script>alert(1)</script>")
    return b"\x89PNG\r\n\x1a\n" + buf.getvalue()


def polyglot_html_gif() -> bytes:
    """GIF header whose body is HTML/JS (GIFAR-style): not a decodable image."""
    return b"GIF89a/*" + b"\x10\x00\x10\x00" + b"*/=1;<script>alert(1)</script>" + b"\0" * 32


def build() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, the content type the client claims)."""
    jpeg = small_jpeg()
    return {
        "zero_bytes": (b"", "image/png"),
        "truncated_jpeg": (jpeg[: len(jpeg) // 2], "image/jpeg"),
        "truncated_png": (small_png()[:60], "image/png"),
        "header_only_png": (small_png()[:33], "image/png"),
        "text_claiming_png": (b"this is plain text, not a PNG at all" * 10, "image/png"),
        "svg_script": (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "image/svg+xml",
        ),
        "html_claiming_jpeg": (b"<!doctype html><script>alert(1)</script>", "image/jpeg"),
        "exe_claiming_png": (b"MZ\x90\x00" + b"\0" * 256, "image/png"),
        "polyglot_zip_png": (polyglot_zip_png(), "image/png"),
        "polyglot_html_gif": (polyglot_html_gif(), "image/gif"),
        "png_pixel_bomb_header": (png_with_size(50_000, 50_000), "image/png"),
        "png_pixel_bomb_idat": (png_bomb_in_idat(), "image/png"),
        "png_side_over_65535": (png_with_size(1, 100_000), "image/png"),
        "gif_pixel_bomb": (gif_huge_screen(), "image/gif"),
        "jpeg_pixel_bomb_sof": (jpeg_huge_sof(), "image/jpeg"),
        "webp_pixel_bomb": (webp_huge_canvas(), "image/webp"),
        "bmp_pixel_bomb": (bmp_huge(), "image/bmp"),
        "png_huge_text_metadata": (png_huge_text(), "image/png"),
        "jpeg_huge_exif_metadata": (jpeg_huge_exif(), "image/jpeg"),
    }
