"""The pipeline: one query in, one answer (or a stream of pieces) out.

request -> media intake (done before this) -> route -> stages -> answer.
The API layer and the CLI both call ``Pipeline``; neither knows about models.

Routes:
- ``rule``: the vision stage answered exactly (offline rules: safety, colour,
  counts, OCR text, reference ranges, objects and positions).
- ``direct``: the vision stage's own answer (a real VLM) or description (caption).
- ``cascade``: the language stage answers from the vision stage's observations.
- ``vision-only``: no language stage configured or available; the description
  is returned with a notice in the question's language.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from flashvl.errors import FlashvlError, StageUnavailable
from flashvl.media.types import LoadedImage
from flashvl.stages.base import (
    Box,
    ChatMessage,
    ChatRequest,
    Generation,
    LanguageStage,
    StreamingVisionStage,
    Task,
    TextDelta,
    VisionRequest,
    VisionResult,
    VisionStage,
)
from flashvl.tasks.language import detect_language
from flashvl.tasks.prompts import cascade_messages

Route = Literal["rule", "direct", "cascade", "vision-only", "text-only"]
NOTICE_VISION_ONLY = {"zh": "当前仅提供图像描述", "en": "image description only"}


@dataclass
class Query:
    images: list[LoadedImage]
    question: str | None = None
    task: Task = "vqa"
    max_tokens: int = 256
    temperature: float = 0.2
    enable_thinking: bool = False
    max_pixels: int | None = None  # per-request cap on pixels the vision stage analyses
    messages: list[ChatMessage] | None = None  # earlier turns (OpenAI API), oldest first


@dataclass
class StageRecord:
    name: str  # "vision" | "language"
    backend: str
    seconds: float
    cached: bool = False
    steps: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "seconds": round(self.seconds, 4),
            "cached": self.cached,
            "steps": {k: round(v, 4) for k, v in self.steps.items()},
        }


@dataclass
class Answer:
    text: str
    route: Route
    vision_stage: str | None
    language_stage: str | None
    confidence: float | None = None
    confidence_source: str | None = None
    stages: list[StageRecord] = field(default_factory=list)
    thinking: str | None = None
    boxes: list[Box] = field(default_factory=list)
    observations: dict[str, Any] | None = None
    description: str | None = None
    notice: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"

    def meta(self) -> dict[str, Any]:
        """What every response says about how it was made."""
        return {
            "route": self.route,
            "vision_stage": self.vision_stage,
            "language_stage": self.language_stage,
            "stages": [s.to_dict() for s in self.stages],
            "confidence": self.confidence,
            "confidence_source": self.confidence_source,
            "notice": self.notice,
        }


class Pipeline:
    """Composes a vision stage and an optional language stage."""

    def __init__(self, vision: VisionStage, language: LanguageStage | None) -> None:
        self.vision = vision
        self.language = language

    async def answer(self, query: Query) -> Answer:
        """The whole answer at once (the stream, collected)."""
        final: Answer | None = None
        async for event in self.stream(query):
            if isinstance(event, Answer):
                final = event
        assert final is not None
        return final

    async def stream(self, query: Query) -> AsyncIterator[TextDelta | Answer]:
        """Yield answer pieces as they are produced, then the final ``Answer``."""
        lang = detect_language(query.question)
        if not query.images:
            async for event in self._text_only(query):
                yield event
            return
        if self.vision.is_vlm and query.question and isinstance(self.vision, StreamingVisionStage):
            async for event in self._vlm_direct(query):
                yield event
            return
        seen, vision_record = await self._see(query)
        base = {
            "vision_stage": self.vision.name,
            "boxes": seen.boxes,
            "observations": seen.observations,
            "description": seen.description,
            "thinking": seen.thinking,
        }
        if seen.answer is not None and (self.vision.is_vlm or (seen.answer_source or "").startswith("rule")):
            route: Route = "rule" if (seen.answer_source or "").startswith("rule") else "direct"
            yield TextDelta(seen.answer)
            yield Answer(seen.answer, route, language_stage=None, confidence=seen.confidence,
                         confidence_source=seen.answer_source, stages=[vision_record], **base)
            return
        if query.task == "caption" or not query.question:
            yield TextDelta(seen.description)
            yield Answer(seen.description, "direct", language_stage=None, confidence=seen.confidence,
                         confidence_source="vision:top-score", stages=[vision_record], **base)
            return
        if self.language is None:
            notice = NOTICE_VISION_ONLY[lang]
            yield TextDelta(seen.description)
            yield Answer(seen.description, "vision-only", language_stage=None, stages=[vision_record],
                         notice=notice, **base)
            return
        ocr_text = "\n".join(line["text"] for line in seen.observations.get("text", {}).get("lines", []))
        messages = cascade_messages(query.question, seen.description, ocr_text, lang)
        request = ChatRequest(messages=messages, max_tokens=query.max_tokens, temperature=query.temperature,
                              enable_thinking=query.enable_thinking)
        async for event in self._generate(request, [vision_record], "cascade", base):
            yield event

    async def _see(self, query: Query) -> tuple[VisionResult, StageRecord]:
        start = time.perf_counter()
        try:
            seen = await self.vision.see(self._vision_request(query))
        except FlashvlError:
            raise
        except Exception as exc:  # a stage failure is a 503 with a reason, never a bare 500
            raise StageUnavailable(self.vision.name, f"vision stage failed: {type(exc).__name__}") from exc
        record = StageRecord("vision", self.vision.name, time.perf_counter() - start, steps=dict(seen.timings.steps))
        return seen, record

    async def _vlm_direct(self, query: Query) -> AsyncIterator[TextDelta | Answer]:
        """A real VLM answers the question itself, streaming."""
        assert isinstance(self.vision, StreamingVisionStage)
        start = time.perf_counter()
        seen: VisionResult | None = None
        stream = self.vision.stream(self._vision_request(query))
        try:
            async for event in stream:
                if isinstance(event, VisionResult):
                    seen = event
                else:
                    yield event
        finally:
            await stream.aclose()
        assert seen is not None, "vision stage ended without a final VisionResult"
        record = StageRecord("vision", self.vision.name, time.perf_counter() - start, steps=dict(seen.timings.steps))
        text = seen.answer if seen.answer is not None else seen.description
        yield Answer(text, "direct", self.vision.name, None, confidence=seen.confidence,
                     confidence_source="vision:token-probability" if seen.confidence is not None else None,
                     stages=[record], thinking=seen.thinking, boxes=seen.boxes, observations=seen.observations,
                     description=seen.description)

    def _vision_request(self, query: Query) -> VisionRequest:
        return VisionRequest(images=query.images, question=query.question, task=query.task,
                             enable_thinking=query.enable_thinking, max_tokens=query.max_tokens,
                             temperature=query.temperature, max_pixels=query.max_pixels)

    async def _text_only(self, query: Query) -> AsyncIterator[TextDelta | Answer]:
        if self.language is None:
            raise FlashvlError("image_required", "This server has no language stage: send an image.", 400)
        messages = list(query.messages or [])
        if query.question and not messages:
            messages = [ChatMessage("user", query.question)]
        request = ChatRequest(messages=messages, max_tokens=query.max_tokens, temperature=query.temperature,
                              enable_thinking=query.enable_thinking)
        async for event in self._generate(request, [], "text-only", {"vision_stage": None}):
            yield event

    async def _generate(
        self, request: ChatRequest, records: list[StageRecord], route: Route, base: dict[str, Any]
    ) -> AsyncIterator[TextDelta | Answer]:
        assert self.language is not None
        start = time.perf_counter()
        final: Generation | None = None
        stream = self.language.stream(request)
        try:
            async for event in stream:
                if isinstance(event, Generation):
                    final = event
                else:
                    yield event
        finally:
            await stream.aclose()  # cancels the generation if our consumer went away
        assert final is not None, "language stage ended without a final Generation"
        record = StageRecord("language", self.language.name, time.perf_counter() - start,
                             steps=dict(final.timings.steps))
        thinking = final.thinking or base.get("thinking")
        yield Answer(
            final.text.strip(), route, language_stage=self.language.name, confidence=final.confidence,
            confidence_source="language:token-probability" if final.confidence is not None else None,
            stages=[*records, record], prompt_tokens=final.prompt_tokens,
            completion_tokens=final.completion_tokens, finish_reason=final.finish_reason,
            **(base | {"thinking": thinking}),
        )
