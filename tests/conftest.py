"""Shared fixtures: real images, a real loopback image server, a real flashvl server process.

Everything network-facing binds 127.0.0.1 only.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flashvl.testing import free_port, stop_server
from tests.servers import start_server

__all__ = ["free_port", "start_server", "stop_server"]


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos from scikit-image, saved as JPEG/PNG files."""
    from skimage import data

    folder = tmp_path_factory.mktemp("images")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.jpg", quality=92)
    Image.fromarray(np.full((120, 200, 3), 255, np.uint8)).save(folder / "white.png")
    (folder / "not-an-image.png").write_text("this is plain text, not a PNG")
    return folder


@pytest.fixture(scope="session")
def image_server(image_dir: Path) -> Iterator[str]:
    """A plain HTTP file server on 127.0.0.1 serving ``image_dir``."""
    handler = functools.partial(QuietHandler, directory=str(image_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server") / "server.log"


@pytest.fixture(scope="session")
def live_server(image_dir: Path, server_log: Path) -> Iterator[str]:
    """The real service (offline default stages, real uvicorn) on a free loopback port.

    Image URLs may reach 127.0.0.1 only (the test image server); file:// reads ``image_dir``.
    """
    proc, base = start_server(
        ["--fetch-allow-cidrs", "127.0.0.1/32", "--file-root", str(image_dir), "--max-tokens", "64"],
        server_log,
    )
    yield base
    stop_server(proc)
