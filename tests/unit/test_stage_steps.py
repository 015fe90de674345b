"""Every response's ``stages[].steps`` shows where a language stage's time went (issue 18): queue,
prompt and generation seconds, and the token counts behind them (prompt tokens reused from the
cache, read anew, generated)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from PIL import Image

from flashvl.media.types import LoadedImage
from flashvl.pipeline.service import Query
from flashvl.stages.base import ChatRequest, Generation, TextDelta, Timings, VisionRequest, VisionResult
from flashvl.stages.llamacpp.chunks import llama_timings as _timings
from tests.pipelines import build_pipeline

LLAMA_TIMINGS = {
    "cache_n": 236,
    "prompt_n": 9,
    "prompt_ms": 120.0,
    "predicted_n": 12,
    "predicted_ms": 800.0,
}


class Eyes:
    name = "eyes"
    model_id = "eyes"
    is_vlm = False

    async def load(self) -> None: ...

    async def close(self) -> None: ...

    def fingerprint(self) -> dict[str, Any]:
        return {"model_id": self.model_id}

    async def see(self, request: VisionRequest) -> VisionResult:
        return VisionResult(self.name, "Objects detected: cat.", timings=Timings({"detect": 0.01}))


class Brain:
    name = "brain"
    model_id = "brain"

    async def load(self) -> None: ...

    async def close(self) -> None: ...

    def fingerprint(self) -> dict[str, Any]:
        return {"model_id": self.model_id}

    async def generate(self, request: ChatRequest) -> Generation:
        return Generation(self.name, "A cat.", timings=_timings(LLAMA_TIMINGS, 1.0))

    async def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | Generation]:
        yield TextDelta("A cat.")
        yield await self.generate(request)


def test_llama_timings_become_steps_and_token_counts() -> None:
    timings = _timings(LLAMA_TIMINGS | {"draft_n": 10, "draft_n_accepted": 7}, 1.0)
    assert timings.steps["prompt"] == 0.12 and timings.steps["generate"] == 0.8
    assert abs(timings.steps["queue"] - 0.08) < 1e-9
    assert timings.tokens == {
        "prompt_cached": 236,
        "prompt_read": 9,
        "generated": 12,
        "drafted": 10,
        "draft_accepted": 7,
    }
    assert timings.total == sum(timings.steps.values())  # counts are not seconds


def test_a_cascade_answer_shows_prompt_cached_tokens_and_generation_in_its_steps() -> None:
    image = Image.new("RGB", (64, 64), "orange")
    loaded = LoadedImage(image, "a" * 64, "PNG", 64, 64, 0, "upload")
    pipeline = build_pipeline(Eyes(), Brain())
    answer = asyncio.run(pipeline.answer(Query([loaded], "Why is the cat here?", route="cascade")))
    assert answer.route == "cascade"
    language = next(stage.to_dict() for stage in answer.stages if stage.name == "language")
    steps = language["steps"]
    assert steps["prompt"] == 0.12 and steps["generate"] == 0.8 and "queue" in steps
    assert steps["prompt_cached_tokens"] == 236
    assert steps["prompt_read_tokens"] == 9
    assert steps["generated_tokens"] == 12
