"""MediaIntake: every way an image enters, each under the byte cap, all through decode_image.

Real files, a real local HTTP server on 127.0.0.1 and real Starlette UploadFiles.
"""

from __future__ import annotations

import base64
import functools
import io
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from starlette.datastructures import UploadFile

from flashvl.config import Settings
from flashvl.errors import MediaError
from flashvl.media import LoadedImage, MediaIntake


def png_bytes(size: tuple[int, int] = (24, 20), color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


PNG = png_bytes()


class CountingBytesIO(io.BytesIO):
    """Records how many bytes were read: proves uploads are not read whole."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    (root / "cat.png").write_bytes(PNG)
    (root / "with space.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)
    (root / "escape.png").symlink_to(tmp_path / "secret.png")
    return root


@pytest.fixture
def http_root(image_dir: Path) -> Iterator[str]:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(image_dir))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def intake(image_dir: Path) -> AsyncIterator[MediaIntake]:
    settings = Settings(file_root=image_dir, fetch_allow_cidrs=["127.0.0.1/32"], max_image_bytes=300_000)
    async with MediaIntake(settings) as media:
        yield media


async def refusal(coroutine) -> MediaError:  # type: ignore[no-untyped-def]
    with pytest.raises(MediaError) as caught:
        await coroutine
    return caught.value


def assert_is_png(loaded: LoadedImage, source: str) -> None:
    assert (loaded.format, loaded.width, loaded.height, loaded.source) == ("PNG", 24, 20, source)
    assert loaded.image.getpixel((0, 0)) == (10, 200, 30)


# ----------------------------------------------------------------- uploads


@pytest.mark.anyio
async def test_upload_is_decoded(intake: MediaIntake) -> None:
    assert_is_png(await intake.from_upload(UploadFile(io.BytesIO(PNG), filename="a.png")), "upload")


@pytest.mark.anyio
async def test_oversized_upload_is_refused_after_reading_about_the_cap(intake: MediaIntake) -> None:
    stream = CountingBytesIO(PNG + b"\x00" * 5_000_000)
    error = await refusal(intake.from_upload(UploadFile(stream, filename="big.png")))  # size unknown
    assert (error.code, error.status) == ("image_too_large_bytes", 413)
    assert stream.bytes_read < 300_000 + 2 * 256 * 1024


@pytest.mark.anyio
async def test_upload_with_declared_size_over_the_cap_is_not_read(intake: MediaIntake) -> None:
    stream = CountingBytesIO(PNG)
    error = await refusal(intake.from_upload(UploadFile(stream, size=10_000_000, filename="big.png")))
    assert error.code == "image_too_large_bytes"
    assert stream.bytes_read == 0


# ----------------------------------------------------------------- base64


@pytest.mark.anyio
@pytest.mark.parametrize(
    "value",
    [
        base64.b64encode(PNG).decode(),
        "data:image/png;base64," + base64.b64encode(PNG).decode(),
        "DATA:image/png;BASE64," + base64.b64encode(PNG).decode(),
        base64.encodebytes(PNG).decode(),  # MIME line breaks
        base64.urlsafe_b64encode(PNG).decode().rstrip("="),  # URL-safe, unpadded
    ],
)
async def test_base64_forms_are_accepted(intake: MediaIntake, value: str) -> None:
    assert_is_png(await intake.from_base64(value), "base64")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "value", ["not base64 at all!", "data:image/png,rawbytes", "data:image/png;base64", "QUJD$$==", "A"]
)
async def test_invalid_base64_is_refused(intake: MediaIntake, value: str) -> None:
    error = await refusal(intake.from_base64(value))
    assert (error.code, error.status) == ("invalid_base64", 400)


@pytest.mark.anyio
async def test_base64_length_is_checked_before_decoding(intake: MediaIntake) -> None:
    # Not even valid base64: only a length check that runs first can answer "too large".
    error = await refusal(intake.from_base64("!" * 500_000))
    assert (error.code, error.status) == ("image_too_large_bytes", 413)


@pytest.mark.anyio
async def test_whitespace_padding_does_not_get_past_the_cap(intake: MediaIntake) -> None:
    error = await refusal(intake.from_base64(" " * 1_000_000 + base64.b64encode(PNG).decode()))
    assert (error.code, error.status) == ("image_too_large_bytes", 413)


@pytest.mark.anyio
async def test_base64_of_text_claiming_to_be_png_is_refused(intake: MediaIntake) -> None:
    value = "data:image/png;base64," + base64.b64encode(b"just some text, not a picture").decode()
    error = await refusal(intake.from_base64(value))
    assert (error.code, error.status) == ("unsupported_format", 415)


# ----------------------------------------------------------------- URLs


@pytest.mark.anyio
async def test_http_url_is_fetched_and_decoded(intake: MediaIntake, http_root: str) -> None:
    assert_is_png(await intake.from_url(f"{http_root}/cat.png"), "url")


@pytest.mark.anyio
async def test_loopback_url_is_refused_without_the_allowlist(http_root: str) -> None:
    async with MediaIntake(Settings()) as media:
        error = await refusal(media.from_url(f"{http_root}/cat.png"))
    assert (error.code, error.status) == ("url_address_blocked", 403)


@pytest.mark.anyio
@pytest.mark.parametrize("url", ["ftp://127.0.0.1/cat.png", "gopher://x/", "cat.png"])
async def test_other_schemes_are_refused(intake: MediaIntake, url: str) -> None:
    error = await refusal(intake.from_url(url))
    assert (error.code, error.status) == ("unsupported_url_scheme", 400)


@pytest.mark.anyio
async def test_data_url_goes_through_from_url(intake: MediaIntake) -> None:
    loaded = await intake.from_url("data:image/png;base64," + base64.b64encode(PNG).decode())
    assert_is_png(loaded, "base64")


@pytest.mark.anyio
async def test_file_url_under_the_root_is_read(intake: MediaIntake, image_dir: Path) -> None:
    assert_is_png(await intake.from_url(f"file://{image_dir}/cat.png"), "file")
    assert_is_png(await intake.from_url(f"file://{image_dir}/with%20space.png"), "file")
    assert_is_png(await intake.from_url(f"file://localhost{image_dir}/cat.png"), "file")


@pytest.mark.anyio
async def test_file_urls_are_off_without_a_root(image_dir: Path) -> None:
    async with MediaIntake(Settings()) as media:
        error = await refusal(media.from_url(f"file://{image_dir}/cat.png"))
    assert (error.code, error.status) == ("file_url_not_allowed", 403)
    assert "file_root" in error.message


@pytest.mark.anyio
@pytest.mark.parametrize("suffix", ["/../secret.png", "/escape.png", "/../does-not-exist.png"])
async def test_file_urls_cannot_leave_the_root(intake: MediaIntake, image_dir: Path, suffix: str) -> None:
    # escape.png is a symlink under the root pointing outside it; the missing file outside
    # the root answers "not allowed", not "not found", so existence outside is not revealed.
    error = await refusal(intake.from_url(f"file://{image_dir}{suffix}"))
    assert (error.code, error.status) == ("file_url_not_allowed", 403)


@pytest.mark.anyio
async def test_missing_file_under_the_root(intake: MediaIntake, image_dir: Path) -> None:
    error = await refusal(intake.from_url(f"file://{image_dir}/nope.png"))
    assert (error.code, error.status) == ("file_not_found", 400)


@pytest.mark.anyio
async def test_file_url_with_a_remote_host_is_refused(intake: MediaIntake, image_dir: Path) -> None:
    error = await refusal(intake.from_url(f"file://fileserver{image_dir}/cat.png"))
    assert error.code == "invalid_url"


# ----------------------------------------------------------------- paths and references


@pytest.mark.anyio
async def test_trusted_path_is_read_with_the_cap(intake: MediaIntake, tmp_path: Path) -> None:
    assert_is_png(await intake.from_path(tmp_path / "secret.png"), "path")  # outside file_root: trusted
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\x00" * 400_000)
    error = await refusal(intake.from_path(big))
    assert (error.code, error.status) == ("image_too_large_bytes", 413)
    error = await refusal(intake.from_path(tmp_path / "missing.png"))
    assert error.code == "file_not_found"


@pytest.mark.anyio
async def test_reference_accepts_every_openai_form(intake: MediaIntake, image_dir: Path, http_root: str) -> None:
    encoded = base64.b64encode(PNG).decode()
    assert_is_png(await intake.from_reference(f"{http_root}/cat.png"), "url")
    assert_is_png(await intake.from_reference(f"data:image/png;base64,{encoded}"), "base64")
    assert_is_png(await intake.from_reference(f"file://{image_dir}/cat.png"), "file")
    assert_is_png(await intake.from_reference(encoded), "base64")


@pytest.mark.anyio
async def test_image_count_limit(intake: MediaIntake) -> None:
    intake.check_count(4)
    with pytest.raises(MediaError) as caught:
        intake.check_count(5)
    assert (caught.value.code, caught.value.status) == ("too_many_images", 400)


@pytest.mark.anyio
async def test_aclose_closes_the_http_client(image_dir: Path) -> None:
    media = MediaIntake(Settings())
    await media.aclose()
    assert media._client.is_closed
