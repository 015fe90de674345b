"""One vision cache shared by real server processes through one real ``redis-server``.

Two ``flashvl serve --vision glm4v:DIR --vision-cache redis`` processes on a tiny local GLM-4.6V-
architecture model (random weights: its greedy answer depends on the image): what one computed, the
other serves as a hit; a restarted server still hits; another image, question or parameter, and
another model's server, never hit an entry that is not theirs. Then two servers of the offline default
stage: the observations one process made of an image answer another process's different question.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx
import pytest

from flashvl.testing import start_redis
from tests.conftest import start_server, stop_server

pytest.importorskip("torch")
pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    proc, url = start_redis()  # a real redis-server on loopback
    yield url
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from flashvl.stages.glm4v.tiny import build_tiny_glm4v

    root = tmp_path_factory.mktemp("shared-cache-models")
    return {"one": build_tiny_glm4v(root / "one", seed=1), "other": build_tiny_glm4v(root / "other", seed=2)}


def _start_together(*runs: tuple[list[str], Path]) -> list[tuple[subprocess.Popen, str]]:
    """Start several servers side by side (they load in parallel); none is left running on failure."""
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = [pool.submit(start_server, args, log) for args, log in runs]
        wait(futures)
    started = [future.result() for future in futures if future.exception() is None]
    if len(started) < len(runs):
        for proc, _ in started:
            stop_server(proc)
        raise next(exc for future in futures if (exc := future.exception()) is not None)
    return started


def _ask(base: str, image: Path, prompt: str, **fields: Any) -> dict[str, Any]:
    body = {"image_base64": "data:image/jpeg;base64," + base64.b64encode(image.read_bytes()).decode(), "prompt": prompt}
    response = httpx.post(f"{base}/infer", json=body | fields, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_servers_share_vision_entries_through_redis(
    redis_url: str, models: dict[str, Path], image_dir: Path, tmp_path: Path
) -> None:
    def serve(model: Path, log_name: str) -> tuple[list[str], Path]:
        args = ["--vision", f"glm4v:{model}", "--language", "none", "--route-default", "direct"]
        args += ["--glm-device", "cpu", "--max-tokens", "8"]
        return [*args, "--vision-cache", "redis", "--vision-cache-redis-url", redis_url], tmp_path / log_name

    def ask(base: str, image: str = "coffee", prompt: str = "What is this?", **fields: Any) -> dict[str, Any]:
        return _ask(base, image_dir / f"{image}.jpg", prompt, temperature=0, **fields)

    procs: list[subprocess.Popen] = []
    try:
        (first, a), (second, b) = _start_together(serve(models["one"], "a.log"), serve(models["one"], "b.log"))
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
        (first, a), (third, c) = _start_together(serve(models["one"], "a2.log"), serve(models["other"], "c.log"))
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


def test_offline_servers_share_observations_through_redis(redis_url: str, image_dir: Path, tmp_path: Path) -> None:
    args = ["--vision", "offline", "--language", "none", "--vision-cache", "redis", "--vision-cache-redis-url"]
    (first, a), (second, b) = _start_together(
        ([*args, redis_url], tmp_path / "a.log"), ([*args, redis_url], tmp_path / "b.log")
    )

    def ask(base: str, image: str, prompt: str, **fields: Any) -> dict[str, Any]:
        return _ask(base, image_dir / f"{image}.jpg", prompt, **fields)

    try:
        first_answer = ask(a, "rocket", "What is in the picture?")
        assert first_answer["cache"] == {"vision": "miss", "backend": "redis"}, first_answer["cache"]
        assert ask(b, "rocket", "What is in the picture?")["cache"]["vision"] == "hit"
        # Another question about the same image: the other process's observations, no model run.
        assert ask(b, "rocket", "图片的背景是什么颜色?")["cache"]["vision"] == "hit"
        assert ask(b, "astronaut", "What is in the picture?")["cache"]["vision"] == "miss"
        assert ask(a, "rocket", "What is in the picture?", max_pixels=100_000)["cache"]["vision"] == "miss"
        assert ask(a, "astronaut", "Who is this?")["cache"]["vision"] == "hit"
    finally:
        stop_server(first)
        stop_server(second)
