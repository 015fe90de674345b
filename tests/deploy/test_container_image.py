"""The container image, for real: `scripts/build-image.sh` (what `make image` runs) builds it with no
network inside the build, on a plain Debian bookworm base made here (debootstrap from this machine's
Debian mirror, `podman import`: no image registry needed); then

- a container with no network at all (`--network none`) and a read-only root starts, loads every
  model and turns ready, as a non-root user, and its HEALTHCHECK passes;
- with no credentials it refuses to bind 0.0.0.0 (and says how to allow it);
- a container with a published loopback port answers the product's /infer (a real cascade through
  the bundled language model), /caption and /api/predict, with an API key.

Skipped, with the reason, where no container engine can run. Engine settings: CONTAINER_ENGINE,
CONTAINER_RUNTIME (podman: default runc), CONTAINER_ULIMITS (default nofile/nproc 4096), and
FLASHVL_TEST_IMAGE_BASE to build on another base than the one made here.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from flashvl.security.auth import make_key
from flashvl.testing import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/debian-py:bookworm"


def _engine() -> list[str]:
    """The engine's command with its global options, or skip saying why there is none."""
    name = os.environ.get("CONTAINER_ENGINE") or next((n for n in ("podman", "docker") if shutil.which(n)), None)
    if name is None or not shutil.which(name):
        pytest.skip("no container engine (podman or docker) is installed: apt-get install -y podman runc")
    command = [name]
    if Path(name).name == "podman":
        runtime = os.environ.get("CONTAINER_RUNTIME", "runc" if shutil.which("runc") else "")
        if runtime:
            command += ["--runtime", runtime]
    probe = subprocess.run([*command, "info"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"{name} cannot run containers here: {probe.stderr.strip()[-300:]}")
    return command


def _limits() -> list[str]:
    return [
        arg
        for limit in os.environ.get("CONTAINER_ULIMITS", "nofile=4096:4096 nproc=4096:4096").split()
        for arg in ("--ulimit", limit)
    ]


@dataclass
class Image:
    engine: list[str]
    name: str
    build_s: float
    size_mb: int


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> Iterator[Image]:
    engine = _engine()
    base = os.environ.get("FLASHVL_TEST_IMAGE_BASE", "")
    made_base = False
    if not base:
        base = BASE
        exists = subprocess.run([*engine, "image", "inspect", base], capture_output=True).returncode == 0
        if not exists:
            if not shutil.which("debootstrap") or os.geteuid() != 0:
                pytest.skip("making the Debian base image needs root and debootstrap (or set FLASHVL_TEST_IMAGE_BASE)")
            env = os.environ | {"CONTAINER_ENGINE": engine[0]}
            subprocess.run(["bash", "scripts/container-base.sh", base], cwd=ROOT, check=True, env=env, timeout=900)
            made_base = True
    name = f"localhost/flashvl-test-{uuid.uuid4().hex[:8]}"
    env = os.environ | {"BASE": base, "IMAGE": name, "CONTAINER_ENGINE": engine[0]}
    began = time.perf_counter()
    built = subprocess.run(
        ["bash", "scripts/build-image.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=2000
    )
    build_s = time.perf_counter() - began
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-6000:]
    version = next(
        line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines() if line.startswith("version")
    )
    size = subprocess.run(
        [*engine, "image", "inspect", "--format", "{{.Size}}", f"{name}:{version}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    result = Image(engine, f"{name}:{version}", build_s, int(size) // 1_000_000)
    line = f"container image: built {result.name} on {base} in {build_s:.0f} s, {result.size_mb} MB"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown in the run's output, passed or not
            reporter.write_line(line)
    try:
        yield result
    finally:
        subprocess.run([*engine, "rmi", "--force", f"{name}:{version}", f"{name}:latest"], capture_output=True)
        if made_base:
            subprocess.run([*engine, "rmi", "--force", base], capture_output=True)


@pytest.fixture(scope="module")
def api_key() -> tuple[str, str]:
    return make_key("ci", "infer")


def _run(image: Image, *args: str, name: str) -> None:
    command = [*image.engine, "run", "--detach", "--name", name, *_limits(), "--read-only", "--tmpfs", "/tmp"]
    started = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr


def _remove(image: Image, name: str) -> str:
    shown = subprocess.run([*image.engine, "logs", name], capture_output=True, text=True)
    logs = shown.stdout + shown.stderr  # the container's stdout and stderr
    subprocess.run([*image.engine, "rm", "--force", "--volumes", name], capture_output=True)
    return logs


def _exec(image: Image, name: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*image.engine, "exec", name, *command], capture_output=True, text=True, timeout=60)


READYZ = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/readyz', timeout=3).status)"


def test_starts_offline_read_only_non_root_and_healthy(image: Image, api_key: tuple[str, str]) -> None:
    name = f"flashvl-offline-{uuid.uuid4().hex[:6]}"
    _run(image, "--network", "none", "-e", f"FLASHVL_API_KEYS={api_key[1]}", image.name, name=name)
    try:
        deadline = time.monotonic() + 300
        while _exec(image, name, "python3", "-c", READYZ).stdout.strip() != "200":
            state = subprocess.run(
                [*image.engine, "inspect", "--format", "{{.State.Running}}", name], capture_output=True, text=True
            ).stdout.strip()
            assert state == "true", "the container stopped"
            assert time.monotonic() < deadline, "not ready in 300 s"
            time.sleep(1)
        uid = _exec(image, name, "python3", "-c", "print(open('/proc/1/status').read())").stdout
        uids = next(line for line in uid.splitlines() if line.startswith("Uid:")).split()[1:]
        assert "0" not in uids and uids[0] == "10001", uids  # the server process (pid 1) is not root
        interfaces = _exec(image, name, "python3", "-c", "import socket; print(socket.if_nameindex())").stdout
        assert "eth" not in interfaces, interfaces  # no network at all: it started offline
        if Path(image.engine[0]).name == "podman":
            health = subprocess.run([*image.engine, "healthcheck", "run", name], capture_output=True, text=True)
            assert health.returncode == 0, health.stdout + health.stderr
    finally:
        logs = _remove(image, name)
    assert '"event": "ready"' in logs, logs[-3000:]


def test_refuses_to_bind_all_interfaces_without_auth(image: Image) -> None:
    name = f"flashvl-noauth-{uuid.uuid4().hex[:6]}"
    command = [*image.engine, "run", "--name", name, *_limits(), "--network", "none", image.name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    _remove(image, name)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refusing to serve on '0.0.0.0' with no authentication" in done.stderr
    assert "--insecure-no-auth-on-public-interface" in done.stderr


def test_answers_on_a_published_port(image: Image, api_key: tuple[str, str], image_dir: Path) -> None:
    name = f"flashvl-served-{uuid.uuid4().hex[:6]}"
    port = free_port()
    _run(
        image,
        "--publish",
        f"127.0.0.1:{port}:8080",
        "-e",
        f"FLASHVL_API_KEYS={api_key[1]}",
        "-e",
        "FLASHVL_MAX_TOKENS=64",
        image.name,
        name=name,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"authorization": f"Bearer {api_key[0]}"}
    photo = (image_dir / "chelsea.jpg").read_bytes()
    b64 = base64.b64encode(photo).decode()
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=3).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "not ready in 300 s"
            time.sleep(1)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        refused = httpx.post(f"{base}/infer", json={"image_base64": b64, "prompt": "what is this?"}, timeout=30)
        assert refused.status_code == 401

        infer = httpx.post(
            f"{base}/infer",
            json={"image_base64": b64, "prompt": "What is the cat doing?", "route": "cascade"},
            headers=headers,
            timeout=180,
        )
        assert infer.status_code == 200, infer.text
        assert infer.json()["route"] == "cascade" and infer.json()["text"].strip()
        assert {s["name"] for s in infer.json()["stages"]} == {"vision", "language"}

        objects = httpx.post(
            f"{base}/infer",
            json={"image_base64": b64, "prompt": "图中有哪些物体?它们的位置关系如何?"},
            headers=headers,
            timeout=180,
        )
        assert objects.status_code == 200, objects.text
        assert objects.json()["text"].strip()

        caption = httpx.post(f"{base}/caption", files={"file": ("cat.jpg", photo)}, headers=headers, timeout=120)
        assert caption.status_code == 200, caption.text
        assert "cat" in caption.json()["caption"].lower()

        predict = httpx.post(
            f"{base}/api/predict",
            json={"data": ["这张图里有什么?", f"data:image/jpeg;base64,{b64}"]},
            headers=headers,
            timeout=180,
        )
        assert predict.status_code == 200, predict.text
        assert predict.json()["data"][0].strip()
    finally:
        logs = _remove(image, name)
    assert "fvl_" not in logs  # keys never reach the logs
