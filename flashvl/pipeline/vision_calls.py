"""The vision side of the pipeline: a VLM's direct answer and what to say when the vision stage
is down. Functions of a ``Pipeline``; ``service.py`` decides when each is called, and the guarded
vision calls (``guarded.py``) hold the cache, admission, breaker and deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from flashvl.errors import StageUnavailable
from flashvl.pipeline.guarded import Seen
from flashvl.pipeline.resilience import NOTICE_FALLBACK, VisionDown, is_moderation_request, keyword_fallback
from flashvl.pipeline.router.base import Decision, taken
from flashvl.pipeline.types import Answer, Query
from flashvl.stages.base import TextDelta, VisionRequest, VisionResult

if TYPE_CHECKING:
    from flashvl.pipeline.service import Pipeline


def vision_down(pipeline: Pipeline, query: Query, lang: str, exc: VisionDown) -> Answer:
    """Vision is down: a moderation-style request gets the labelled keyword fallback, others a 503."""
    breaker = pipeline.vision.breaker
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
        degraded=True,
        route_decision={"route": "fallback", "strategy": "degradation", "reason": str(exc)},
        needs_review=fallback.flagged,
        review_reasons=[f"keyword: {w}" for w in fallback.matched],
        intermediate={"fallback": {"matched": fallback.matched}},
    )


async def vlm_direct(pipeline: Pipeline, query: Query, decision: Decision | None) -> AsyncIterator[TextDelta | Answer]:
    """A real VLM answers the question itself, streaming (or from the cache)."""
    looked: Seen | None = None
    async with aclosing(pipeline.vision.stream(vision_request(query), live=query.live)) as events:
        async for event in events:
            if isinstance(event, Seen):
                looked = event
            else:
                yield event
    assert looked is not None
    seen, record, cache_info = looked.result, looked.record, looked.cache
    text = seen.answer if seen.answer is not None else seen.description
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
        route_decision=taken(decision.to_dict(), "direct", "there is no language stage: the VLM answered itself")
        if decision
        else None,
        intermediate={"vision": vision_output(seen)},
        prompt_tokens=seen.prompt_tokens,
        completion_tokens=seen.completion_tokens,
        finish_reason=seen.finish_reason,
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
