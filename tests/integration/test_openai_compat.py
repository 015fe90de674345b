"""``OpenAICompatStage`` against real OpenAI-compatible servers started here, on 127.0.0.1 only.

- vision: a flashvl process serving the scripted tiny GLM model is the upstream of a second
  flashvl process (``--vision openai:<url>#flashvl``); thinking, answer and boxes pass through;
- text: llama.cpp's own server on the offline brain (the in-process llama.cpp stage listens on
  loopback with an API key); the stage's greedy answer equals llama.cpp's in-process answer;
- failures: a closed port, and a loopback server that answers 503, give ``StageUnavailable``
  after exactly ``retries + 1`` attempts.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flashvl.config import Settings
from flashvl.errors import StageUnavailable
from flashvl.media import MediaIntake
from flashvl.stages.base import ChatMessage, ChatRequest, Generation, TextDelta, VisionRequest, VisionResult
from flashvl.stages.openai_compat import OpenAICompatStage, image_url_for
from tests.conftest import free_port, start_server, stop_server

SCRIPT_THINK = "Looking at the image."
SCRIPT_ANSWER = "The object is here: <|begin_of_box|>[120,250,480,760]<|end_of_box|>"


@pytest.fixture(scope="module")
def glm_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    folder = tmp_path_factory.mktemp("upstream") / "tiny-glm4v"
    subprocess.run(
        [sys.executable, "-m", "flashvl", "dev", "tiny-glm4v", str(folder), "--scripted"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    spec = f"glm4v:{folder}"
    proc, base = start_server(
        [
            "--vision",
            spec,
            "--language",
            spec,
            "--route-default",
            "direct",
            "--vision-cache",
            "none",
            "--fetch-allow-cidrs",
            "127.0.0.1/32",
        ],
        folder.parent / "upstream.log",
    )
    yield base
    stop_server(proc)


@pytest.fixture(scope="module")
def downstream(glm_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("downstream") / "server.log"
    proc, base = start_server(
        [
            "--vision",
            f"openai:{glm_upstream}/v1#flashvl",
            "--language",
            "none",
            "--route-default",
            "direct",
            "--vision-cache",
            "none",
        ],
        log,
    )
    yield base
    stop_server(proc)


def test_flashvl_behind_flashvl_passes_answer_boxes_and_thinking(downstream: str, image_dir: Path) -> None:
    url = "data:image/jpeg;base64," + base64.b64encode((image_dir / "astronaut.jpg").read_bytes()).decode()
    r = httpx.post(f"{downstream}/infer", json={"image_base64": url, "prompt": "Where is it?"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["vision_stage"] == "openai:flashvl" and body["route"] == "direct"
    assert body["text"] == SCRIPT_ANSWER
    assert body["boxes"][0]["box_1000"] == [120, 250, 480, 760]
    assert body["boxes"][0]["box"] == [61.44, 128.0, 245.76, 389.12] or body["boxes"][0]["box"] == [
        61.4,
        128.0,
        245.8,
        389.1,
    ]  # 512x512 astronaut
    stream_body = {
        "stream": True,
        "chat_template_kwargs": {"enable_thinking": True},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }
    thinking, content = [], []
    with httpx.stream("POST", f"{downstream}/v1/chat/completions", json=stream_body, timeout=60) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:") and "[DONE]" not in line:
                import json

                for choice in json.loads(line[5:]).get("choices", []):
                    thinking.append(choice["delta"].get("reasoning_content") or "")
                    content.append(choice["delta"].get("content") or "")
    assert "".join(thinking) == SCRIPT_THINK
    assert "".join(content) == SCRIPT_ANSWER


def test_url_mode_forwards_the_original_url(glm_upstream: str, image_server: str) -> None:
    async def run() -> VisionResult:
        async with MediaIntake(Settings(fetch_allow_cidrs=["127.0.0.1/32"])) as intake:
            image = await intake.from_url(f"{image_server}/coffee.jpg")
        assert image_url_for(image, "url", None) == f"{image_server}/coffee.jpg"
        assert image_url_for(image, "base64", None).startswith("data:image/jpeg;base64,")
        stage = OpenAICompatStage(f"{glm_upstream}/v1", "flashvl", role="vision", image_mode="url")
        await stage.load()
        try:
            return await stage.see(VisionRequest([image], "Where?", enable_thinking=True))
        finally:
            await stage.close()

    seen = asyncio.run(run())
    assert seen.answer == SCRIPT_ANSWER and seen.thinking == SCRIPT_THINK
    assert seen.boxes[0].norm == (120, 250, 480, 760)
    # The upstream's own usage and finish reason, as typed fields.
    assert seen.prompt_tokens > 0 and seen.completion_tokens > 0 and seen.finish_reason == "stop"


def _complete(base: str, body: dict[str, object], stream: bool) -> tuple[str, dict[str, int]]:
    """(finish_reason, usage) of one chat completion, streamed (with include_usage) or not."""
    if not stream:
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["finish_reason"], r.json()["usage"]
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60) as r:
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:") and "[DONE]" not in line]
    finished = [e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(finished) == 1 and events[-1]["choices"] == [], events[-2:]
    return finished[0], events[-1]["usage"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_usage_and_finish_reason_are_the_upstreams(
    glm_upstream: str, downstream: str, image_dir: Path, stream: bool
) -> None:
    url = "data:image/jpeg;base64," + base64.b64encode((image_dir / "coffee.jpg").read_bytes()).decode()
    content = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": url}}]
    body: dict[str, object] = {"messages": [{"role": "user", "content": content}]}
    cut = _complete(downstream, body | {"max_tokens": 3}, stream)
    assert cut[0] == "length" and cut[1]["completion_tokens"] == 3 and cut[1]["prompt_tokens"] > 0
    assert cut == _complete(glm_upstream, body | {"max_tokens": 3}, stream)  # what the upstream itself reports
    whole = _complete(downstream, body, stream)
    assert whole[0] == "stop" and whole[1]["completion_tokens"] > 3
    assert whole == _complete(glm_upstream, body, stream)


# ------------------------------------------------------------------ failures


class _Unavailable(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self) -> None:
        type(self).hits += 1
        self.send_response(503)
        self.send_header("retry-after", "7")
        self.end_headers()
        self.wfile.write(b'{"error": "overloaded"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_upstream_503_is_retried_then_stage_unavailable() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stage = OpenAICompatStage(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", role="language", retries=2)

    async def run() -> None:
        await stage.load()
        try:
            await stage.generate(ChatRequest([ChatMessage("user", "hi")], max_tokens=4))
        finally:
            await stage.close()

    with pytest.raises(StageUnavailable) as info:
        asyncio.run(run())
    server.shutdown()
    assert _Unavailable.hits == 3  # 1 + 2 retries
    assert info.value.status == 503 and info.value.retry_after == 7


def test_closed_port_is_stage_unavailable() -> None:
    stage = OpenAICompatStage(
        f"http://127.0.0.1:{free_port()}/v1", "m", role="language", retries=1, connect_timeout_s=1
    )

    async def run() -> None:
        await stage.load()
        try:
            await stage.generate(ChatRequest([ChatMessage("user", "hi")], max_tokens=4))
        finally:
            await stage.close()

    with pytest.raises(StageUnavailable, match="2 attempts"):
        asyncio.run(run())


# ------------------------------------------------------------------ llama.cpp's server, real brain


@pytest.mark.slow
def test_llamacpp_server_as_language_upstream_matches_in_process() -> None:
    from flashvl.stages.brain_model import BrainModelError, ensure_brain_model
    from flashvl.stages.llamacpp import LlamaCppLanguageStage

    try:
        path = ensure_brain_model(Path(os.environ.get("FLASHVL_MODEL_DIR", "~/.cache/flashvl/models")).expanduser())
    except BrainModelError as exc:
        pytest.skip(f"real brain model unavailable: {exc.message}")
    request = ChatRequest([ChatMessage("user", "Name one primary colour. One word.")], max_tokens=8, temperature=0)

    async def run() -> tuple[Generation, list[TextDelta], Generation, str]:
        brain = LlamaCppLanguageStage(path, slots=1, ctx=2048)
        await brain.load()
        try:
            local = await brain.generate(request)
            stage = OpenAICompatStage(brain.http_address or "", "brain", role="language", api_key=brain.http_api_key)
            await stage.load()
            deltas: list[TextDelta] = []
            final: Generation | None = None
            async for event in stage.stream(request):
                if isinstance(event, Generation):
                    final = event
                else:
                    deltas.append(event)
            await stage.close()
            wrong = OpenAICompatStage(brain.http_address or "", "brain", role="language", api_key="wrong")
            await wrong.load()
            try:
                await wrong.generate(request)
                refused = "no"
            except StageUnavailable as exc:
                refused = exc.message
            await wrong.close()
            assert final is not None
            return local, deltas, final, refused
        finally:
            await brain.close()

    local, deltas, remote, refused = asyncio.run(run())
    assert remote.text == local.text.strip() and remote.text
    assert "".join(d.text for d in deltas if d.kind == "answer").strip() == remote.text
    assert remote.completion_tokens > 0 and remote.confidence is not None
    assert "401" in refused
