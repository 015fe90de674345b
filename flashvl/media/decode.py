"""Turn encoded image bytes into a size-checked RGB ``LoadedImage``.

Order matters (peer pain point 2): sniff the format from magic bytes, read the
dimensions from the header without decoding, refuse oversized images, and only
then decode. The client's content type is never trusted.
"""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
from PIL import Image, ImageFile, ImageOps

from flashvl.config import Settings
from flashvl.errors import MediaError
from flashvl.media.types import LoadedImage, Source

# Formats this module can sniff, in the spelling ``Settings.allowed_formats`` uses.
SNIFFABLE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
# No real photo is wider or taller than this (JPEG's own limit); larger sides are hostile or broken.
MAX_IMAGE_SIDE = 65_535
# Images with a shorter side than this are enlarged (nearest neighbour, aspect kept) after decoding:
# detectors, OCR and colour statistics all need a few pixels to work with.
MIN_IMAGE_SIDE = 16
# Bytes per pixel of a decoded image, as Pillow holds it (multi-band modes take 4 bytes a pixel).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Transparent pixels are composited onto white: what a viewer shows for a transparent PNG.
_BACKGROUND = (255, 255, 255)
_EXIF_ORIENTATION = 0x0112
_CORRUPT_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)


def sniff_format(data: bytes) -> str | None:
    """Return the image format named by ``data``'s magic bytes, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and len(data) >= 26:
        return "BMP"
    return None


def accepted_formats(settings: Settings) -> list[str]:
    """Formats both configured and sniffable, in a stable order."""
    return [fmt for fmt in SNIFFABLE_FORMATS if fmt in settings.allowed_formats]


def _webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    """WebP canvas size from the RIFF header. Pillow's WebP plugin allocates the
    canvas while *opening*, so the pixel check has to run before it does."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height as the container's header states them, before any decoder sees the file."""
    if fmt == "PNG" and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if fmt == "GIF" and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if fmt == "BMP" and len(data) >= 26 and int.from_bytes(data[14:18], "little") >= 40:
        width, height = struct.unpack("<ii", data[18:26])
        return width, abs(height)
    return None


def _png_bytes_per_pixel(data: bytes) -> int:
    """Bytes per pixel a PNG's samples take (16-bit samples count double), from its IHDR."""
    if len(data) < 26:
        return 0
    depth, colour_type = data[24], data[25]
    return max(1, _PNG_CHANNELS.get(colour_type, 4) * depth // 8)


def _check_memory(width: int, height: int, bytes_per_pixel: int, settings: Settings) -> None:
    need = width * height * bytes_per_pixel
    if need > settings.max_decoded_image_bytes:
        raise MediaError(
            "image_too_large_memory",
            f"Decoding this {width}x{height} image would take {need} bytes ({bytes_per_pixel} per pixel for its "
            f"mode and bit depth); the limit is {settings.max_decoded_image_bytes} (setting "
            "max_decoded_image_bytes). Send an 8-bit image without alpha, or a smaller one.",
            413,
        )


def _check_dimensions(width: int, height: int, settings: Settings) -> None:
    if width <= 0 or height <= 0 or width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise MediaError(
            "invalid_image_dimensions",
            f"Image header says {width}x{height}; each side must be between 1 and {MAX_IMAGE_SIDE} pixels.",
            400,
        )
    ratio = max(width, height) / min(width, height)
    if ratio > settings.max_image_aspect_ratio:
        raise MediaError(
            "image_aspect_ratio_too_large",
            f"Image is {width}x{height}, {ratio:.0f}:1; the most accepted is {settings.max_image_aspect_ratio:g}:1 "
            "(setting max_image_aspect_ratio). Crop or split the image.",
            400,
        )
    if width * height > settings.max_image_pixels:
        raise MediaError(
            "image_too_large_pixels",
            f"Image is {width}x{height} = {width * height} pixels; the limit is {settings.max_image_pixels} "
            "(setting max_image_pixels). Downscale the image before sending it.",
            413,
        )


def _bomb_error(detail: object) -> MediaError:
    return MediaError("decompression_bomb", f"Image refused as a decompression bomb: {detail}", 413)


def _corrupt_error(fmt: str, detail: object) -> MediaError:
    text = str(detail)
    if "decompressed data too large" in text.lower() or "too much memory used in text chunks" in text.lower():
        # Pillow's own cap on compressed text/ICC chunks: metadata that inflates past it
        return MediaError(
            "image_metadata_too_large",
            f"The image's compressed metadata inflates past the decoder's limit ({text}). Strip the metadata.",
            413,
        )
    return MediaError("corrupt_image", f"The {fmt} image is truncated or corrupt: {text[:200]}", 400)


def _enlarge_small(image: Image.Image) -> Image.Image:
    """Enlarge an image whose shorter side is under ``MIN_IMAGE_SIDE`` (nearest neighbour, aspect kept)."""
    short = min(image.size)
    if short >= MIN_IMAGE_SIDE:
        return image
    scale = -(-MIN_IMAGE_SIDE // short)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def _open_lazily(data: bytes, fmt: str) -> ImageFile.ImageFile:
    """Parse only the header, with the one plugin the magic bytes named.

    Calls the plugin factory directly instead of ``Image.open`` so Pillow's global
    bomb check (which only warns below 2x its limit) does not run before ours.
    """
    Image.init()
    factory, _accept = Image.OPEN[fmt]
    try:
        return factory(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc) from exc
    except _CORRUPT_ERRORS as exc:
        raise _corrupt_error(fmt, exc) from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB for every mode Pillow hands back for the accepted formats."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit samples map to 8-bit by /257 (65535 -> 255); float and 32-bit ints clip.
        scale = 257.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 1.0
        gray = np.clip(np.rint(values / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if image.mode == "RGBA":  # composite in place of a converted copy: one canvas more, not two
        canvas = Image.new("RGB", image.size, _BACKGROUND)
        canvas.paste(image, mask=image)
        return canvas
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate as the EXIF Orientation tag says; a broken EXIF block must not reject a good image."""
    try:
        if image.getexif().get(_EXIF_ORIENTATION, 1) == 1:
            return image  # exif_transpose would copy the pixels for nothing
        return ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF is common in the wild; keep pixels as stored
        return image


_PNG_METADATA_CHUNKS = {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"iCCP"}


def metadata_bytes(data: bytes, fmt: str) -> int:
    """Bytes of metadata (JPEG APPn/COM segments, PNG text/EXIF/ICC chunks) before the pixels.

    Walks the container's own length fields without decoding anything; stops at the
    first pixel data (JPEG SOS, PNG IDAT) or at a malformed length (decoding reports that).
    """
    total = 0
    if fmt == "JPEG":
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF:
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0xDA or marker == 0xD9:  # start of scan / end of image
                break
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if 0xE0 <= marker <= 0xEF or marker == 0xFE:
                total += length
            pos += 2 + length
    elif fmt == "PNG":
        pos = 8
        while pos + 8 <= len(data):
            length = int.from_bytes(data[pos : pos + 4], "big")
            kind = data[pos + 4 : pos + 8]
            if kind == b"IDAT":
                break
            if kind in _PNG_METADATA_CHUNKS:
                total += length
            pos += 12 + length
    return total


def decode_image(data: bytes, settings: Settings, source: Source) -> LoadedImage:
    """Check and decode one image. Raises ``MediaError`` with a stable code on refusal.

    CPU-bound: call it off the event loop (``asyncio.to_thread``).
    """
    if not data:
        raise MediaError("empty_image", "The image is empty (0 bytes).", 400)
    if len(data) > settings.max_image_bytes:
        raise MediaError(
            "image_too_large_bytes",
            f"Image is {len(data)} bytes; the limit is {settings.max_image_bytes} (setting max_image_bytes).",
            413,
        )
    accepted = accepted_formats(settings)
    fmt = sniff_format(data)
    if fmt is None or fmt not in accepted:
        what = f"a {fmt} image" if fmt else "not a recognised image (checked the file's first bytes)"
        raise MediaError(
            "unsupported_format",
            f"The data is {what}. Accepted formats: {', '.join(accepted)}.",
            415,
        )
    if (meta := metadata_bytes(data, fmt)) > settings.max_image_metadata_bytes:
        raise MediaError(
            "image_metadata_too_large",
            f"The image carries {meta} bytes of metadata (EXIF, comments, text, ICC); the limit is "
            f"{settings.max_image_metadata_bytes} (setting max_image_metadata_bytes). Strip the metadata.",
            413,
        )
    if fmt == "WEBP" and (canvas := _webp_canvas_size(data)) is not None:
        _check_dimensions(*canvas, settings)
    if (declared := _header_size(data, fmt)) is not None:
        _check_dimensions(*declared, settings)
        if fmt == "PNG":
            _check_memory(*declared, max(_png_bytes_per_pixel(data), 1), settings)

    # Pillow's own bomb guard for what the header check cannot see (e.g. a GIF frame that
    # grows the canvas while loading). Set on every call from this call's settings instead of
    # trusting whatever the process-wide value is; errors at 2x, and we re-check after loading.
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    image = _open_lazily(data, fmt)
    _check_dimensions(*image.size, settings)
    _check_memory(*image.size, _MODE_BYTES.get(image.mode, 4), settings)
    try:
        image.load()  # GIF/WebP: loads only the first frame
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc) from exc
    except _CORRUPT_ERRORS as exc:
        raise _corrupt_error(fmt, exc) from exc
    if image.width * image.height > settings.max_image_pixels:
        raise _bomb_error(f"the canvas grew to {image.width}x{image.height} while decoding")

    rgb = _enlarge_small(_to_rgb(_apply_exif_orientation(image)))
    return LoadedImage(
        image=rgb,
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        width=rgb.width,
        height=rgb.height,
        nbytes=len(data),
        source=source,
    )
