"""Stage-split services: gateway + vision + language as three real ``flashvl serve`` processes, wired
only by ``openai:`` stage specs (``flashvl serve --only vision`` / ``--only language``).

The full cascade answers through both stage services; killing the language process gives labelled
degraded (vision-only) answers; each stage service is an OpenAI-compatible API on its own.
"""

from __future__ import annotations

import base64
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from flashvl.testing import ServerProcess, start_server, stop_server

pytestmark = pytest.mark.slow


@dataclass
class Split:
    vision: ServerProcess
    language: ServerProcess
    gateway: ServerProcess


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory, image_dir: Path) -> Iterator[Split]:
    logs = tmp_path_factory.mktemp("split")
    started: list[ServerProcess] = []
    try:
        vision = start_server(["--only", "vision", "--vision", "offline"], logs / "vision.log")
        started.append(vision)
        language = start_server(["--only", "language", "--max-tokens", "64"], logs / "language.log")
        started.append(language)
        gateway = start_server(
            [
                "--vision",
                f"openai:{vision.base}/v1#flashvl-vision",
                "--language",
                f"openai:{language.base}/v1#flashvl-language",
                "--upstream-retries",
                "0",
                "--breaker-failures",
                "1",
                "--file-root",
                str(image_dir),
                "--max-tokens",
                "64",
            ],
            logs / "gateway.log",
        )
        started.append(gateway)
        yield Split(vision, language, gateway)
    finally:
        for server in reversed(started):
            stop_server(server.proc)


def _data_url(path: Path) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()


def test_stage_services_are_openai_compatible(split: Split, image_dir: Path) -> None:
    models = httpx.get(f"{split.vision.base}/v1/models", timeout=10).json()
    assert models["data"][0]["id"] == "flashvl-vision"
    assert models["data"][0]["flashvl"] == {"role": "vision", "stage": "offline-pipeline", "is_vlm": False}
    image = {"type": "image_url", "image_url": {"url": _data_url(image_dir / "chelsea.jpg")}}
    seen = httpx.post(
        f"{split.vision.base}/v1/chat/completions",
        json={"model": "flashvl-vision", "messages": [{"role": "user", "content": [image]}]},
        timeout=60,
    ).json()
    assert "cat" in seen["choices"][0]["message"]["content"].lower()
    assert seen["flashvl"]["stage"] == "offline-pipeline"
    said = httpx.post(
        f"{split.language.base}/v1/chat/completions",
        json={
            "model": "flashvl-language",
            "messages": [{"role": "user", "content": "Reply with the single word: yes"}],
            "max_tokens": 8,
            "temperature": 0,
            "logprobs": True,
        },
        timeout=120,
    ).json()
    assert "yes" in said["choices"][0]["message"]["content"].lower()
    assert said["choices"][0]["logprobs"]["content"], "token log-probabilities come back when asked"
    wrong = httpx.post(
        f"{split.language.base}/v1/chat/completions",
        json={"model": "flashvl", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"
    metrics = httpx.get(f"{split.vision.base}/metrics", timeout=10).text
    assert "flashvl_model_queue_depth 0.0" in metrics  # the HPAs' custom metric (deploy/kubernetes/)
    # The vision service does not serve the gateway's routes: it is one stage.
    assert httpx.post(f"{split.vision.base}/infer", json={}, timeout=10).status_code == 404


def test_gateway_cascade_then_degrades_when_language_is_killed(split: Split, image_dir: Path) -> None:
    question = "What is the cat doing, and what might it be thinking about?"
    body = {"image_url": f"file://{image_dir / 'chelsea.jpg'}", "prompt": question, "route": "cascade"}
    full = httpx.post(f"{split.gateway.base}/infer", json=body, timeout=180)
    assert full.status_code == 200, full.text
    answer = full.json()
    assert answer["route"] == "cascade", answer
    assert answer["text"].strip()
    backends = {stage["name"]: stage["backend"] for stage in answer["stages"]}
    assert backends == {"vision": "openai:flashvl-vision", "language": "openai:flashvl-language"}, answer["stages"]
    assert answer.get("notice") is None

    caption = httpx.post(
        f"{split.gateway.base}/caption", files={"file": (image_dir / "chelsea.jpg").read_bytes()}, timeout=120
    )
    assert caption.status_code == 200, caption.text
    assert "cat" in caption.json()["caption"].lower()

    split.language.proc.send_signal(signal.SIGKILL)
    split.language.proc.wait(timeout=10)
    degraded = httpx.post(f"{split.gateway.base}/infer", json=body, timeout=120)
    assert degraded.status_code == 200, degraded.text
    down = degraded.json()
    assert down["route"] == "vision-only", down
    assert down["notice"] == "image description only", down
    assert "cat" in down["text"].lower()
    assert "language stage down" in down["route_decision"]["changed_because"], down["route_decision"]
