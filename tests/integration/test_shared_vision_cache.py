"""One vision cache shared by real server processes through one real ``redis-server``.

Two ``flashvl serve --vision glm4v:DIR --vision-cache redis`` processes on a tiny local GLM-4.6V-
architecture model (random weights: its greedy answer depends on the image): what one computed, the
other serves as a hit; a restarted server still hits; another image, question or parameter, and
another model's server, never hit an entry that is not theirs.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, start_server, stop_server

pytest.importorskip("torch")
pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: apt-get install -y redis-server (or bash scripts/system-deps.sh)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from flashvl.stages.glm4v.tiny import build_tiny_glm4v

    root = tmp_path_factory.mktemp("shared-cache-models")
    return {"one": build_tiny_glm4v(root / "one", seed=1), "other": build_tiny_glm4v(root / "other", seed=2)}


def _data_url(path: Path) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()


def test_servers_share_vision_entries_through_redis(
    redis_url: str, models: dict[str, Path], image_dir: Path, tmp_path: Path
) -> None:
    def serve(model: Path, log_name: str) -> Callable[[], tuple[subprocess.Popen, str]]:
        args = [
            "--vision",
            f"glm4v:{model}",
            "--language",
            "none",
            "--route-default",
            "direct",
            "--glm-device",
            "cpu",
            "--max-tokens",
            "8",
            "--vision-cache",
            "redis",
            "--vision-cache-redis-url",
            redis_url,
        ]
        return lambda: start_server(args, tmp_path / log_name)

    def start_all(*starters: Callable[[], tuple[subprocess.Popen, str]]) -> list[tuple[subprocess.Popen, str]]:
        with ThreadPoolExecutor(len(starters)) as pool:  # the processes load side by side
            return list(pool.map(lambda start: start(), starters))

    def ask(base: str, image: str = "coffee", **fields: Any) -> dict[str, Any]:
        body = {"image_base64": _data_url(image_dir / f"{image}.jpg"), "prompt": "What is this?", "temperature": 0}
        response = httpx.post(f"{base}/infer", json=body | fields, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()

    procs: list[subprocess.Popen] = []
    try:
        (first, a), (second, b) = start_all(serve(models["one"], "a.log"), serve(models["one"], "b.log"))
        procs += [first, second]

        computed = ask(a)
        assert computed["cache"] == {"vision": "miss", "backend": "redis"}, computed["cache"]
        shared = ask(b)  # another process, same model and settings: the first one's entry
        assert shared["cache"]["vision"] == "hit", shared["cache"]
        assert shared["text"] == computed["text"]
        assert ask(a)["cache"]["vision"] == "hit"

        # What differs in image, question or an output parameter never reads another's entry.
        assert ask(b, image="chelsea")["cache"]["vision"] == "miss"
        assert ask(b, prompt="Describe the colours.")["cache"]["vision"] == "miss"
        assert ask(b, max_pixels=100_000)["cache"]["vision"] == "miss"
        assert ask(b, max_tokens=4)["cache"]["vision"] == "miss"
        assert ask(a, image="chelsea")["cache"]["vision"] == "hit"  # b's entry, served to a

        # A restarted server keeps its hits; a server of another model shares none of them.
        stop_server(first)
        (first, a), (third, c) = start_all(serve(models["one"], "a2.log"), serve(models["other"], "c.log"))
        procs += [first, third]
        assert ask(a)["cache"]["vision"] == "hit"
        assert ask(a, image="chelsea")["cache"]["vision"] == "hit"
        other = ask(c)
        assert other["cache"]["vision"] == "miss"
        assert ask(c)["cache"]["vision"] == "hit"  # its own entry, under its own key
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop_server(proc)
