"""Shared fixtures: real images, a real loopback image server, a real flashvl server process.

Everything network-facing binds 127.0.0.1 only.
"""

from __future__ import annotations

import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

READY_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def start_server(
    extra_args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """Start ``flashvl serve`` as a real process and wait until /readyz says ready."""
    port = free_port()
    cmd = [sys.executable, "-m", "flashvl", "serve", "--host", "127.0.0.1", "--port", str(port), *extra_args]
    if "--jobs-sqlite-path" not in extra_args:  # each test server gets its own job queue, not ~/.cache's
        cmd += ["--jobs-sqlite-path", str(log_path.parent / f"jobs-{port}.sqlite3")]
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"server not ready in {READY_TIMEOUT_S}s:\n{log_path.read_text()[-4000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


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
