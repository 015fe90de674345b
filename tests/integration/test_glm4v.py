"""The in-process GLM-4.6V stage through the REAL API, on tiny GLM-4.6V-architecture models.

Two tiny models are built locally (never downloaded) and each served by a real
``flashvl serve --vision glm4v:DIR --language glm4v:DIR`` process:

- a *scripted* one (``flashvl dev tiny-glm4v --scripted``) that always writes the same
  GLM-format reply (``<think>..</think><answer>.. <|begin_of_box|>[120,250,480,760]<|end_of_box|>``),
  so thinking, answers and boxes can be checked exactly through every endpoint;
- a *random* one whose greedy answers are noise that depends on the image: used to show
  batching (``flashvl_batch_size`` > 1 under concurrent requests) and that concurrent
  requests with different images each get exactly the answer their image gets alone.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import start_server, stop_server

pytest.importorskip("torch")
pytest.importorskip("torchvision")

SCRIPT_THINK = "Looking at the image."
SCRIPT_ANSWER = "The object is here: <|begin_of_box|>[120,250,480,760]<|end_of_box|>"
SCRIPT_BOX_1000 = [120.0, 250.0, 480.0, 760.0]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@pytest.fixture(scope="session")
def tiny_glm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-glm4v")
    scripted, noisy = root / "scripted", root / "random"
    # The CLI command users run, for the scripted one; the same builder in-process for the other.
    subprocess.run(
        [sys.executable, "-m", "flashvl", "dev", "tiny-glm4v", str(scripted), "--scripted"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    from flashvl.stages.glm4v.tiny import build_tiny_glm4v

    build_tiny_glm4v(noisy, seed=1)
    assert (scripted / "model.safetensors").is_file() and (noisy / "config.json").is_file()
    return {"scripted": scripted, "random": noisy}


def _serve(model: Path, log: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    spec = f"glm4v:{model}"
    return start_server(
        [
            "--vision",
            spec,
            "--language",
            spec,
            "--route-default",
            "direct",
            "--glm-device",
            "cpu",
            "--vision-cache",
            "none",
            *extra,
        ],
        log,
    )


@pytest.fixture(scope="session")
def scripted_server(
    tiny_glm_dirs: dict[str, Path], image_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    proc, base = _serve(
        tiny_glm_dirs["scripted"],
        tmp_path_factory.mktemp("glm-s") / "server.log",
        ["--fetch-allow-cidrs", "127.0.0.1/32", "--max-tokens", "32"],
    )
    yield base
    stop_server(proc)


@pytest.fixture(scope="session")
def random_server(tiny_glm_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # A long batch wait makes concurrent arrivals meet in one batch even on a loaded 2-core machine.
    proc, base = _serve(
        tiny_glm_dirs["random"],
        tmp_path_factory.mktemp("glm-r") / "server.log",
        ["--max-tokens", "24", "--batch-wait-ms", "300", "--batch-max-size", "8"],
    )
    yield base
    stop_server(proc)


def data_url(path: Path) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def expected_pixels(path: Path) -> list[float]:
    width, height = image_size(path)
    x1, y1, x2, y2 = SCRIPT_BOX_1000
    return [
        round(x1 * width / 1000, 1),
        round(y1 * height / 1000, 1),
        round(x2 * width / 1000, 1),
        round(y2 * height / 1000, 1),
    ]


def chat_body(url: str, question: str, **extra: object) -> dict[str, object]:
    return {
        "model": "flashvl",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": question},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
        **extra,
    }


def sse_events(response: httpx.Response) -> list[dict]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            events.append(json.loads(line[5:]))
    return events


# ------------------------------------------------------------------ every endpoint, scripted model


def test_infer_answers_with_boxes_in_pixels_of_the_original_image(scripted_server: str, image_dir: Path) -> None:
    photo = image_dir / "astronaut.jpg"
    r = httpx.post(
        f"{scripted_server}/infer",
        json={"image_base64": data_url(photo), "prompt": "Where is it?"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["route"] == "direct" and body["vision_stage"].startswith("glm4v:")
    assert body["text"] == SCRIPT_ANSWER
    assert body["thinking"] is None  # thinking is off by default on /infer
    assert body["boxes"][0]["box_1000"] == SCRIPT_BOX_1000
    assert body["boxes"][0]["box"] == expected_pixels(photo)
    assert body["confidence"] is not None and 0 < body["confidence"] <= 1


def test_infer_by_url_with_a_smaller_max_pixels_still_maps_boxes_to_the_original(
    scripted_server: str, image_server: str, image_dir: Path
) -> None:
    r = httpx.post(
        f"{scripted_server}/infer",
        json={"image_url": f"{image_server}/coffee.jpg", "prompt": "Where is the cup?", "max_pixels": 65_536},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["boxes"][0]["box"] == expected_pixels(image_dir / "coffee.jpg")


def test_caption_and_predict(scripted_server: str, image_dir: Path) -> None:
    photo = image_dir / "chelsea.jpg"
    with photo.open("rb") as handle:
        r = httpx.post(f"{scripted_server}/caption", files={"file": ("c.jpg", handle, "image/jpeg")}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["caption"] == SCRIPT_ANSWER and r.json()["route"] == "direct"
    r = httpx.post(f"{scripted_server}/api/predict", json={"data": ["What is this?", data_url(photo)]}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [SCRIPT_ANSWER]


@pytest.mark.parametrize("thinking", [True, False])
def test_openai_chat_with_thinking_on_and_off(scripted_server: str, image_dir: Path, thinking: bool) -> None:
    body = chat_body(
        data_url(image_dir / "rocket.jpg"), "What is it?", chat_template_kwargs={"enable_thinking": thinking}
    )
    r = httpx.post(f"{scripted_server}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert message["content"] == SCRIPT_ANSWER
    assert message["reasoning_content"] == (SCRIPT_THINK if thinking else None)


def test_openai_streaming_separates_thinking_from_answer(scripted_server: str, image_dir: Path) -> None:
    body = chat_body(
        data_url(image_dir / "coffee.jpg"),
        "What is it?",
        stream=True,
        chat_template_kwargs={"enable_thinking": True},
    )
    with httpx.stream("POST", f"{scripted_server}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        events = sse_events(r)
    deltas = [e["choices"][0]["delta"] for e in events if e.get("choices")]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == SCRIPT_THINK
    assert "".join(d.get("content") or "" for d in deltas) == SCRIPT_ANSWER
    assert len([d for d in deltas if d.get("content")]) >= 2  # it streamed, in pieces
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["flashvl"]["vision_stage"].startswith("glm4v:")


def test_text_only_chat_uses_the_same_model_as_language_stage(scripted_server: str) -> None:
    r = httpx.post(
        f"{scripted_server}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Hello"}]},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == SCRIPT_ANSWER
    meta = r.json()["flashvl"]
    assert meta["route"] == "text-only" and meta["language_stage"] == meta["stages"][0]["backend"]
    models = httpx.get(f"{scripted_server}/v1/models", timeout=10).json()["data"][0]["flashvl"]
    assert models["vision_is_vlm"] is True and models["vision_stage"] == models["language_stage"]


# ------------------------------------------------------------------ finish reason and usage, every route


def _routes(url: str) -> dict[str, dict[str, object]]:
    """A chat body per route the scripted server takes (the key is the route the answer reports)."""
    only_image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
    return {
        "direct": chat_body(url, "Where is it?"),
        "cascade": chat_body(url, "Where is it?", route="cascade"),
        "caption": {"messages": [only_image]},  # no question: the vision stage describes the image
        "text-only": {"messages": [{"role": "user", "content": "Hello"}]},
    }


def _complete(base: str, body: dict[str, object], stream: bool) -> tuple[str, dict[str, int], dict]:
    """(finish_reason, usage, flashvl meta) of one chat completion, streamed or not."""
    if not stream:
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        out = r.json()
        return out["choices"][0]["finish_reason"], out["usage"], out["flashvl"]
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        events = sse_events(r)
    *pieces, last, usage = events
    assert usage["choices"] == [] and "flashvl" not in usage, usage  # the usage chunk comes last, alone
    assert all(e["choices"][0]["finish_reason"] is None and "usage" not in e for e in pieces)
    return last["choices"][0]["finish_reason"], usage["usage"], last["flashvl"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("route", ["direct", "cascade", "caption", "text-only"])
def test_finish_reason_and_usage_are_truthful_on_every_route(
    scripted_server: str, image_dir: Path, route: str, stream: bool
) -> None:
    body = _routes(data_url(image_dir / "astronaut.jpg"))[route]
    cut, cut_usage, meta = _complete(scripted_server, body | {"max_tokens": 3}, stream)
    assert meta["route"] == ("direct" if route == "caption" else route)
    assert cut == "length"
    assert cut_usage["completion_tokens"] == 3 and cut_usage["prompt_tokens"] > 0
    assert cut_usage["total_tokens"] == cut_usage["prompt_tokens"] + 3
    assert meta["finish_reason"] == "length" and meta["usage"] == cut_usage  # the same, in the flashvl metadata
    whole, usage, meta = _complete(scripted_server, body, stream)  # the scripted reply ends well within 32
    assert whole == "stop"
    assert 3 < usage["completion_tokens"] < 32 and usage["prompt_tokens"] > 0
    if route != "cascade":  # (the cascade's prompt holds the vision stage's description, cut at 3 tokens too)
        assert usage["prompt_tokens"] == cut_usage["prompt_tokens"]
    assert meta["finish_reason"] == "stop" and meta["usage"] == usage


def test_infer_reports_finish_reason_and_usage_too(scripted_server: str, image_dir: Path) -> None:
    url = data_url(image_dir / "chelsea.jpg")
    r = httpx.post(
        f"{scripted_server}/infer", json={"image_base64": url, "prompt": "Where?", "max_tokens": 2}, timeout=60
    )
    assert r.status_code == 200, r.text
    assert r.json()["finish_reason"] == "length" and r.json()["usage"]["completion_tokens"] == 2
    with (image_dir / "chelsea.jpg").open("rb") as handle:
        r = httpx.post(f"{scripted_server}/caption", files={"file": ("c.jpg", handle, "image/jpeg")}, timeout=60)
    assert r.json()["finish_reason"] == "stop" and r.json()["usage"]["completion_tokens"] > 0


# ------------------------------------------------------------------ batching and cross-talk, random model


def _infer(base: str, url: str) -> str:
    r = httpx.post(
        f"{base}/infer",
        json={"image_base64": url, "prompt": "Describe the image.", "temperature": 0, "max_tokens": 24},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r.json()["text"]


def _batch_histogram(base: str) -> tuple[float, float]:
    """(batches, batches of size 1) from flashvl_batch_size."""
    total = ones = 0.0
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("flashvl_batch_size_count"):
            total = float(line.split()[-1])
        if line.startswith("flashvl_batch_size_bucket") and 'le="1.0"' in line:
            ones = float(line.split()[-1])
    return total, ones


def test_concurrent_requests_are_batched_and_each_gets_its_own_images_answer(
    random_server: str, image_dir: Path
) -> None:
    urls = [data_url(image_dir / f"{name}.jpg") for name in PHOTOS]
    alone = [_infer(random_server, url) for url in urls]  # one at a time: batches of one
    assert len(set(alone)) == len(urls), "the tiny model must answer each photo differently"
    before_total, before_ones = _batch_histogram(random_server)
    # Each photo twice, all at once, in an order unlike the one above.
    order = [3, 0, 2, 1, 1, 3, 0, 2]
    with ThreadPoolExecutor(len(order)) as pool:
        together = list(pool.map(lambda i: _infer(random_server, urls[i]), order))
    total, ones = _batch_histogram(random_server)
    assert total - before_total < len(order), "concurrent requests should share batches"
    assert (total - before_total) - (ones - before_ones) >= 1, "at least one batch had more than one request"
    # No cross-talk: each concurrent answer is exactly the one its own image gets alone.
    assert together == [alone[i] for i in order]


def test_streaming_client_that_goes_away_does_not_break_others(random_server: str, image_dir: Path) -> None:
    urls = [data_url(image_dir / f"{name}.jpg") for name in PHOTOS[:2]]
    expected = _infer(random_server, urls[1])
    body = chat_body(urls[0], "Describe the image.", stream=True, max_tokens=24, temperature=0)

    def abandon() -> None:
        with httpx.stream("POST", f"{random_server}/v1/chat/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data:") and "[DONE]" not in line:
                    choices = json.loads(line[5:]).get("choices") or [{}]
                    if choices[0].get("delta", {}).get("content"):
                        return  # the client goes away after its first token

    with ThreadPoolExecutor(2) as pool:
        gone = pool.submit(abandon)
        kept = pool.submit(_infer, random_server, urls[1])
        gone.result()
        assert kept.result() == expected
    assert httpx.get(f"{random_server}/readyz", timeout=10).status_code == 200


def test_a_png_of_another_size_gets_boxes_scaled_to_it(scripted_server: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (1000, 500), (10, 200, 30)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    r = httpx.post(f"{scripted_server}/infer", json={"image_base64": url, "prompt": "Where?"}, timeout=60)
    assert r.json()["boxes"][0]["box"] == [120.0, 125.0, 480.0, 380.0]
