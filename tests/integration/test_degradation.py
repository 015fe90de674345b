"""Degradation with real parts: the real offline vision stage, and a language upstream that is a real
OpenAI-compatible server *process* on 127.0.0.1, killed with SIGKILL and restarted under concurrent load.

The upstream is a tiny canned-answer HTTP server (not a model) and the client is a minimal
OpenAI-compatible language stage written here: ``flashvl/stages/openai_compat.py`` did not exist yet
when this was written. What is under test is the pipeline's timeout/breaker/degradation, not the model.
"""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from PIL import Image

from flashvl.config import Settings
from flashvl.errors import StageUnavailable
from flashvl.media import decode_image
from flashvl.media.types import LoadedImage
from flashvl.pipeline.cache.memory import MemoryVisionCache
from flashvl.pipeline.service import Query
from flashvl.stages.base import ChatRequest, Generation, TextDelta
from flashvl.stages.offline.stage import OfflineVisionStage
from tests.conftest import free_port
from tests.pipelines import build_pipeline

pytestmark = pytest.mark.slow
UPSTREAM = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        choice = {"message": {"content": "A tabby cat is lying down."}, "finish_reason": "stop"}
        body = json.dumps({"choices": [choice], "usage": {"completion_tokens": 6}}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


class MiniOpenAIStage:
    """The smallest OpenAI-compatible language stage: POST /v1/chat/completions, no retries."""

    name = "openai-test"
    model_id = "canned"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=1.0))

    async def load(self) -> None: ...

    async def close(self) -> None:
        await self.client.aclose()

    def fingerprint(self) -> dict[str, str]:
        return {"model_id": self.model_id}

    async def generate(self, request: ChatRequest) -> Generation:
        body = {"model": "m", "messages": [{"role": m.role, "content": m.content} for m in request.messages]}
        response = await self.client.post(f"{self.base_url}/v1/chat/completions", json=body)
        response.raise_for_status()
        data = response.json()
        return Generation(self.name, data["choices"][0]["message"]["content"], completion_tokens=6)

    async def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | Generation]:
        generation = await self.generate(request)
        yield TextDelta(generation.text)
        yield generation


def start_upstream(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={}, timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("upstream did not start")


@pytest.fixture(scope="module")
def vision() -> Iterator[OfflineVisionStage]:
    stage = OfflineVisionStage.from_settings(Settings())
    asyncio.run(stage.load())
    yield stage


def cat() -> LoadedImage:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, "JPEG", quality=90)
    return decode_image(buffer.getvalue(), Settings(), "path")


def test_language_killed_and_restarted_under_load(vision: OfflineVisionStage) -> None:
    port = free_port()
    upstream = start_upstream(port)
    language = MiniOpenAIStage(f"http://127.0.0.1:{port}")
    pipeline = build_pipeline(
        vision,
        language,
        cache=MemoryVisionCache(),
        breaker_failures=2,
        breaker_reset_s=1.0,
        language_timeout_s=3.0,
    )
    image = cat()
    questions = ["What is the cat doing?", "这只猫在做什么?"]

    async def wave(n: int = 8) -> list:
        return await asyncio.gather(
            *(pipeline.answer(Query([image], questions[i % 2], route="cascade")) for i in range(n)),
            return_exceptions=True,
        )

    async def scenario() -> dict[str, object]:
        before = await wave()
        upstream.send_signal(signal.SIGKILL)
        upstream.wait()
        during = await wave() + await wave()
        restart = time.monotonic()
        fresh = start_upstream(port)
        recovered_after = None
        while time.monotonic() - restart < 10:
            answers = await wave(4)
            if all(not isinstance(a, Exception) and a.route == "cascade" for a in answers):
                recovered_after = time.monotonic() - restart
                break
            await asyncio.sleep(0.2)
        await language.close()
        return {"before": before, "during": during, "recovered_after": recovered_after, "proc": fresh}

    result = asyncio.run(scenario())
    result["proc"].kill()
    assert all(a.route == "cascade" and a.text.startswith("A tabby cat") for a in result["before"])
    failures = [a for a in result["during"] if isinstance(a, Exception)]
    assert failures == []  # zero failed requests while the brain is dead
    for answer in result["during"]:
        assert answer.route == "vision-only" and answer.degraded
        assert answer.notice in ("image description only", "当前仅提供图像描述")
        assert answer.text == answer.description and answer.text
    assert pipeline.breakers["language"].trips >= 1
    print(f"full answers again {result['recovered_after']:.2f} s after the upstream restarted")
    assert result["recovered_after"] is not None and result["recovered_after"] < 10


def test_vision_down_moderation_fallback_else_503(vision: OfflineVisionStage) -> None:
    broken = OfflineVisionStage.from_settings(Settings())  # never loaded: every see() fails for real
    pipeline = build_pipeline(broken, None, breaker_failures=1, breaker_reset_s=30)
    image = cat()
    moderation = asyncio.run(pipeline.answer(Query([image], "Is this gun picture allowed to be posted?")))
    assert moderation.route == "fallback" and moderation.degraded and moderation.needs_review
    assert "rule-based" in moderation.notice and moderation.review_reasons == ["keyword: gun"]
    with pytest.raises(StageUnavailable) as refused:
        asyncio.run(pipeline.answer(Query([image], "What is the cat doing?")))
    assert refused.value.status == 503 and refused.value.retry_after >= 1
    # a cache hit still answers while the stage is down
    cached = build_pipeline(broken, None, cache=MemoryVisionCache())
    warm = build_pipeline(vision, None, cache=cached.cache)
    asyncio.run(warm.answer(Query([image], task="caption")))
    assert asyncio.run(cached.answer(Query([image], task="caption"))).stages[0].cached


def test_a_vlm_that_is_down_trips_the_breaker_then_fails_fast_with_the_fallback() -> None:
    """A real VLM stage (OpenAI-compatible upstream) whose server is gone: a loopback port nobody
    listens on. Its direct answers count against the vision breaker like any vision call."""
    from flashvl.stages.openai_compat import OpenAICompatStage

    port = free_port()  # nothing listens here: every connection is refused, on loopback only
    upstream = OpenAICompatStage(f"http://127.0.0.1:{port}/v1", "glm-4.6v-flash", role="vision", retries=0)
    pipeline = build_pipeline(upstream, None, breaker_failures=2, breaker_reset_s=30)

    async def run() -> tuple[list[int], object]:
        await upstream.load()
        try:
            statuses = []
            for _ in range(3):
                try:
                    await pipeline.answer(Query([cat()], "What is the cat doing?", route="direct"))
                except StageUnavailable as exc:
                    statuses.append(exc.status)
            moderation = await pipeline.answer(Query([cat()], "Is this gun picture allowed to be posted?"))
            return statuses, moderation
        finally:
            await upstream.close()

    statuses, moderation = asyncio.run(run())
    assert statuses == [503, 503, 503]
    breaker = pipeline.breakers["vision"]
    assert breaker.state == "open" and breaker.trips == 1 and breaker.failures == 2  # the 3rd never called
    assert moderation.route == "fallback" and moderation.degraded and moderation.needs_review


def test_disclaimer_and_intermediate_on_rule_answers(vision: OfflineVisionStage) -> None:
    pipeline = build_pipeline(vision, None)
    answer = asyncio.run(
        # was "Is this image safe for work? Any legal risk?": the safety rule answered the first part only;
        # rules now answer a question whole or not at all (issue 20)
        pipeline.answer(
            Query([cat()], "Is this image safe for work under our legal policy?", include_intermediate=True)
        )
    )
    assert answer.route == "rule" and answer.text.endswith("AI-assisted suggestion, for reference only")
    assert answer.intermediate["vision"]["answer_source"] == "rule:safety"
    assert answer.meta()["intermediate"]["disclaimer_domains"] == ["legal"]
