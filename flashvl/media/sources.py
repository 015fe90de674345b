"""``MediaIntake``: the one place where images enter the service.

Every source (upload, base64, data/http(s)/file URL, CLI path) is read under the
byte cap before anything else happens, then decoded off the event loop by
``decode_image``, so every image the rest of the service sees passed the same checks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
from starlette.datastructures import UploadFile

from flashvl.config import Settings
from flashvl.errors import MediaError
from flashvl.media.decode import decode_image
from flashvl.media.fetch import Resolver, UrlFetcher, build_client
from flashvl.media.types import LoadedImage, Source

UPLOAD_CHUNK_BYTES = 256 * 1024
_BASE64_ALPHABET_FIX = str.maketrans("-_", "+/")  # accept the URL-safe alphabet too
_WHITESPACE = str.maketrans("", "", " \t\r\n")


def _too_large(settings: Settings, what: str) -> MediaError:
    return MediaError(
        "image_too_large_bytes",
        f"The {what} is larger than {settings.max_image_bytes} bytes (setting max_image_bytes).",
        413,
    )


def _read_file_capped(path: Path, settings: Settings, what: str) -> bytes:
    """Read a regular file, refusing before reading if it is over the cap."""
    # Non-blocking open: a FIFO (or a device) would otherwise block this thread until someone writes to it.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        raise MediaError("file_not_found", f"The {what} does not exist.", 400) from exc
    except PermissionError as exc:
        raise MediaError("file_not_found", f"The {what} cannot be read (permission denied).", 400) from exc
    except (OSError, ValueError) as exc:  # ENXIO (a socket), ELOOP, an embedded NUL
        raise MediaError("file_not_found", f"The {what} cannot be opened as a regular file.", 400) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MediaError("file_not_found", f"The {what} is not a regular file.", 400)
        if info.st_size > settings.max_image_bytes:
            raise _too_large(settings, what)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            data = handle.read(settings.max_image_bytes + 1)
    except OSError as exc:
        raise MediaError("file_not_found", f"The {what} cannot be read.", 400) from exc
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > settings.max_image_bytes:  # the file grew after fstat
        raise _too_large(settings, what)
    return data


class MediaIntake:
    """Reads images from every supported source under ``Settings``; owns one HTTP client."""

    def __init__(self, settings: Settings, *, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self._client: httpx.AsyncClient = build_client(settings)
        self._fetcher = UrlFetcher(settings, self._client, resolver)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> MediaIntake:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def check_count(self, count: int) -> None:
        """Refuse a request that carries more images than ``max_images_per_request``."""
        if count > self.settings.max_images_per_request:
            raise MediaError(
                "too_many_images",
                f"The request has {count} images; the limit is {self.settings.max_images_per_request} "
                "(setting max_images_per_request).",
                400,
            )

    async def _decode(self, data: bytes, source: Source) -> LoadedImage:
        return await asyncio.to_thread(decode_image, data, self.settings, source)

    async def from_upload(self, upload: UploadFile) -> LoadedImage:
        """A multipart upload, read in chunks so an oversized one is refused early."""
        cap = self.settings.max_image_bytes
        if upload.size is not None and upload.size > cap:
            raise _too_large(self.settings, "uploaded image")
        body = bytearray()
        while chunk := await upload.read(UPLOAD_CHUNK_BYTES):
            body += chunk
            if len(body) > cap:
                raise _too_large(self.settings, "uploaded image")
        return await self._decode(bytes(body), "upload")

    async def from_base64(self, value: str) -> LoadedImage:
        """Raw base64 or a ``data:<type>;base64,`` URL. The declared type is ignored: the
        bytes are sniffed. The encoded length is checked before anything is decoded."""
        payload = value
        if value[:5].lower() == "data:":
            header, sep, payload = value[5:].partition(",")
            if not sep or not header.lower().endswith(";base64"):
                raise MediaError(
                    "invalid_base64",
                    "A data: URL for an image must look like data:image/png;base64,<data>.",
                    400,
                )
        cap = self.settings.max_image_bytes
        encoded_cap = 4 * -(-cap // 3)
        # Allow for line breaks (MIME wraps at 76 characters) before stripping them.
        if len(payload) > encoded_cap + encoded_cap // 38 + 4:
            raise _too_large(self.settings, "base64 image")
        compact = payload.translate(_WHITESPACE).translate(_BASE64_ALPHABET_FIX)
        if len(compact) > encoded_cap:
            raise _too_large(self.settings, "base64 image")
        compact += "=" * (-len(compact) % 4)
        try:
            data = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaError("invalid_base64", f"The image is not valid base64: {exc}.", 400) from exc
        if len(data) > cap:
            raise _too_large(self.settings, "base64 image")
        return await self._decode(data, "base64")

    async def from_url(self, url: str) -> LoadedImage:
        """A ``data:``, ``http(s)://`` or ``file://`` URL."""
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            return await self.from_base64(url)
        if scheme == "file":
            data = await asyncio.to_thread(self._read_file_url, url)
            return await self._decode(data, "file")
        data = await self._fetcher.fetch(url)  # refuses other schemes with unsupported_url_scheme
        return dataclasses.replace(await self._decode(data, "url"), source_url=url)

    async def from_path(self, path: Path) -> LoadedImage:
        """A local path given by a trusted caller (the CLI). The size cap still applies."""
        data = await asyncio.to_thread(_read_file_capped, Path(path), self.settings, f"file {path}")
        return await self._decode(data, "path")

    async def from_reference(self, ref: str) -> LoadedImage:
        """Whatever OpenAI's ``image_url.url`` takes (http(s) or data URL), a file URL, or raw base64."""
        # Base64 has no ':', so anything with one in its head is meant as a URL.
        if ":" in ref[:32]:
            return await self.from_url(ref)
        return await self.from_base64(ref)

    def _read_file_url(self, url: str) -> bytes:
        root = self.settings.file_root
        if root is None:
            raise MediaError(
                "file_url_not_allowed",
                "file:// image URLs are off; set file_root (FLASHVL_FILE_ROOT) to a folder to allow them.",
                403,
            )
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or parts.query or "\x00" in url:
            raise MediaError("invalid_url", "A file URL must look like file:///absolute/path.", 400)
        unquoted = unquote(parts.path)
        if "\x00" in unquoted:  # a percent-encoded NUL (x.jpg%00.png)
            raise MediaError("invalid_url", "A file URL must not contain a NUL character.", 400)
        requested = Path(unquoted)
        root_real = Path(root).resolve()
        outside = MediaError("file_url_not_allowed", f"The file URL points outside file_root ({root_real}).", 403)
        # Lexical check first, so paths outside the root do not reveal whether they exist.
        lexical = Path(os.path.normpath(requested))
        root_as_given = Path(os.path.normpath(os.path.abspath(root)))
        if not requested.is_absolute() or not (
            lexical.is_relative_to(root_real) or lexical.is_relative_to(root_as_given)
        ):
            raise outside
        try:
            real = requested.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise MediaError("file_not_found", f"No file at {requested} under file_root.", 400) from exc
        except (OSError, RuntimeError) as exc:  # symlink loops
            raise MediaError("file_not_found", f"Cannot resolve {requested}: {exc}", 400) from exc
        if not real.is_relative_to(root_real):  # a symlink that leaves the root
            raise outside
        return _read_file_capped(real, self.settings, f"file {requested}")
