"""The vision side of the pipeline: the cache, the guarded stage call, a VLM's direct answer,
and what to say when the vision stage is down. Functions of a ``Pipeline`` (its stages, cache,
breakers and timeouts); ``service.py`` decides when each is called."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from flashvl.errors import StageUnavailable
from flashvl.pipeline import guarded
from flashvl.pipeline.cache.base import vision_cache_key
from flashvl.pipeline.resilience import NOTICE_FALLBACK, VisionDown, is_moderation_request, keyword_fallback
from flashvl.pipeline.router.base import Decision
from flashvl.pipeline.types import Answer, Query, StageRecord
from flashvl.stages.base import StreamingVisionStage, TextDelta, VisionRequest, VisionResult

if TYPE_CHECKING:
    from flashvl.pipeline.service import Pipeline


async def see(pipeline: Pipeline, query: Query) -> tuple[VisionResult, StageRecord, dict[str, Any]]:
    """The vision stage's result: from the cache when it holds one, else the stage (guarded)."""
    request = vision_request(query)
    start = time.perf_counter()
    key = vision_cache_key(pipeline.vision, request) if pipeline.cache is not None else None
    if pipeline.cache is not None and key:
        hit = await pipeline.cache.get(key)
        if hit is not None:
            record = StageRecord(
                "vision",
                pipeline.vision.name,
                time.perf_counter() - start,
                cached=True,
                steps={"cache": time.perf_counter() - start},
            )
            return hit, record, {"vision": "hit", "backend": pipeline.cache.name}
    seen = await guarded.see(pipeline.vision, pipeline.breakers["vision"], pipeline.vision_timeout_s, request)
    record = StageRecord("vision", pipeline.vision.name, time.perf_counter() - start, steps=dict(seen.timings.steps))
    if pipeline.cache is not None and key:
        await pipeline.cache.set(key, seen)
    return (
        seen,
        record,
        {
            "vision": "miss" if pipeline.cache is not None else "off",
            "backend": pipeline.cache.name if pipeline.cache is not None else None,
        },
    )


def vision_down(pipeline: Pipeline, query: Query, lang: str, exc: VisionDown) -> Answer:
    """Vision is down: a moderation-style request gets the labelled keyword fallback, others a 503."""
    breaker = pipeline.breakers["vision"]
    if not is_moderation_request(query.task, query.question):
        raise StageUnavailable(
            pipeline.vision.name,
            f"vision stage unavailable ({exc}); retry later",
            retry_after=breaker.retry_after() or 5.0,
        ) from exc
    texts = [query.question or ""] + [m.content for m in query.messages or []]
    fallback = keyword_fallback(texts, lang)  # type: ignore[arg-type]
    return Answer(
        fallback.text,
        "fallback",
        vision_stage=None,
        language_stage=None,
        confidence_source="rule:keyword-fallback",
        notice=NOTICE_FALLBACK[lang],
        degraded=True,  # type: ignore[index]
        route_decision={"route": "fallback", "strategy": "degradation", "reason": str(exc)},
        needs_review=fallback.flagged,
        review_reasons=[f"keyword: {w}" for w in fallback.matched],
        intermediate={"fallback": {"matched": fallback.matched}},
    )


async def vlm_direct(pipeline: Pipeline, query: Query, decision: Decision | None) -> AsyncIterator[TextDelta | Answer]:
    """A real VLM answers the question itself, streaming (or from the cache)."""
    assert isinstance(pipeline.vision, StreamingVisionStage)
    request = vision_request(query)
    start = time.perf_counter()
    # A sampled answer (temperature > 0) is one draw among many: caching it would freeze it.
    cacheable = pipeline.cache is not None and not request.temperature
    key = vision_cache_key(pipeline.vision, request) if cacheable else None
    seen = await pipeline.cache.get(key) if pipeline.cache is not None and key else None
    cached = seen is not None
    if seen is None:
        calls = guarded.see_streaming(pipeline.vision, pipeline.breakers["vision"], request, live=query.live)
        async with aclosing(calls) as events:
            async for event in events:
                if isinstance(event, VisionResult):
                    seen = event
                else:
                    yield event
        assert seen is not None
        if pipeline.cache is not None and key:
            await pipeline.cache.set(key, seen)
    text = seen.answer if seen.answer is not None else seen.description
    if cached:
        if seen.thinking:
            yield TextDelta(seen.thinking, kind="thinking")
        yield TextDelta(text)
    record = StageRecord(
        "vision",
        pipeline.vision.name,
        time.perf_counter() - start,
        cached=cached,
        steps=dict(seen.timings.steps) if not cached else {"cache": time.perf_counter() - start},
    )
    cache_info = {
        "vision": ("hit" if cached else "miss") if key else "off",
        "backend": pipeline.cache.name if pipeline.cache is not None else None,
    }
    yield Answer(
        text,
        "direct",
        pipeline.vision.name,
        None,
        confidence=seen.confidence,
        confidence_source="vision:token-probability" if seen.confidence is not None else None,
        stages=[record],
        thinking=seen.thinking,
        boxes=seen.boxes,
        observations=seen.observations,
        description=seen.description,
        cache=cache_info,
        route_decision=decision.to_dict() if decision else None,
        intermediate={"vision": vision_output(seen)},
        prompt_tokens=int(seen.observations.get("prompt_tokens", 0) or 0),
        completion_tokens=int(seen.observations.get("completion_tokens", 0) or 0),
    )


def vision_request(query: Query, question: str | None = None) -> VisionRequest:
    return VisionRequest(
        images=query.images,
        question=question or query.question,
        task=query.task,
        enable_thinking=query.enable_thinking,
        max_tokens=query.max_tokens,
        temperature=query.temperature,
        max_pixels=query.max_pixels,
    )


def vision_output(seen: VisionResult) -> dict[str, Any]:
    return {
        "description": seen.description,
        "answer": seen.answer,
        "answer_source": seen.answer_source,
        "confidence": seen.confidence,
    }
