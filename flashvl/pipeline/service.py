"""The pipeline: one query in, one answer (or a stream of pieces) out.

request -> media intake (done before this) -> route -> stages -> answer.
The API layer and the CLI both call ``Pipeline``; neither knows about models.

Routes:
- ``rule``: the vision stage answered exactly (offline rules: safety, colour,
  counts, OCR text, reference ranges, objects and positions).
- ``direct``: the vision stage's own answer (a real VLM) or description (caption;
  simple questions when the router says so).
- ``cascade``: the language stage answers from the vision stage's observations,
  then arbitration checks the answer against them.
- ``vision-only``: no language stage, or it is down (breaker open, timeout, error);
  the description is returned with a notice in the question's language.
- ``fallback``: the vision stage is down and the request is moderation-style: a
  labelled keyword check over the text (anything else is a 503 with Retry-After).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from flashvl.errors import FlashvlError, StageUnavailable
from flashvl.pipeline import arbitration as arb
from flashvl.pipeline import guarded, vision_calls
from flashvl.pipeline.arbitration_policy import arbitrate
from flashvl.pipeline.cache.base import VisionCache
from flashvl.pipeline.disclaimers import DEFAULT_DISCLAIMER, disclaimer_for
from flashvl.pipeline.resilience import (
    CircuitBreaker,
    VisionDown,
)
from flashvl.pipeline.review_store import SqliteReviewStore, build_review_store
from flashvl.pipeline.router.base import Decision, Router
from flashvl.pipeline.router.override import resolve_route
from flashvl.pipeline.router.rules import KeywordRouter
from flashvl.pipeline.types import NOTICE_VISION_ONLY, Answer, Query, RequestedRoute, Route, StageRecord
from flashvl.stages.base import (
    ChatMessage,
    ChatRequest,
    Generation,
    LanguageStage,
    Relay,
    StreamingVisionStage,
    TextDelta,
    VisionResult,
    VisionStage,
)
from flashvl.tasks.language import detect_language
from flashvl.tasks.prompts import cascade_messages

if TYPE_CHECKING:
    from flashvl.config import Settings

__all__ = ["NOTICE_VISION_ONLY", "Answer", "Pipeline", "Query", "Route", "StageRecord"]


class Pipeline:
    """Composes a vision stage and an optional language stage, with routing, caching,
    arbitration and degradation around them (all optional; defaults keep the plain cascade)."""

    def __init__(
        self,
        vision: VisionStage,
        language: LanguageStage | None,
        *,
        router: Router | None = None,
        route_default: RequestedRoute = "auto",
        direct_without_vlm: bool = False,
        cache: VisionCache | None = None,
        arbiter: arb.Arbiter | None = None,
        reask: bool = True,
        voter: LanguageStage | None = None,
        reviews: arb.ReviewStore | SqliteReviewStore | None = None,
        vision_timeout_s: float = 30.0,
        language_timeout_s: float = 100.0,
        breaker_failures: int = 3,
        breaker_reset_s: float = 5.0,
        disclaimers: dict[str, str] | None = DEFAULT_DISCLAIMER,
    ) -> None:
        self.vision = vision
        self.language = language
        self.router: Router = router or KeywordRouter()
        self.route_default = route_default
        self.direct_without_vlm = direct_without_vlm
        self.cache = cache
        self.arbiter = arbiter
        self.reask = reask
        self.voter = voter
        self.reviews = reviews or arb.ReviewStore()
        self.vision_timeout_s = vision_timeout_s
        self.language_timeout_s = language_timeout_s
        self.breakers = {
            role: CircuitBreaker(role, breaker_failures, breaker_reset_s) for role in ("vision", "language")
        }
        self.disclaimers = disclaimers

    @classmethod
    def from_settings(cls, settings: Settings, vision: VisionStage, language: LanguageStage | None) -> Pipeline:
        from flashvl.pipeline.cache.base import build_cache
        from flashvl.pipeline.router.classifier import ClassifierRouter

        router: Router = (
            ClassifierRouter()
            if settings.router == "classifier"
            else KeywordRouter(settings.router_keywords_zh or None, settings.router_keywords_en or None)
        )
        arbiter = arb.Arbiter(settings.arbitration_similarity_threshold) if settings.arbitration else None
        return cls(
            vision,
            language,
            router=router,
            route_default=settings.route_default,  # type: ignore[arg-type]
            direct_without_vlm=settings.router_direct_without_vlm,
            cache=build_cache(settings),
            arbiter=arbiter,
            reask=settings.arbitration_reask,
            reviews=build_review_store(settings.review_store, settings.review_sqlite_path, settings.review_max_items),
            vision_timeout_s=settings.vision_timeout_s,
            language_timeout_s=settings.language_timeout_s,
            breaker_failures=settings.breaker_failures,
            breaker_reset_s=settings.breaker_reset_s,
            disclaimers={"zh": settings.disclaimer_zh, "en": settings.disclaimer_en} if settings.disclaimers else None,
        )

    async def answer(self, query: Query) -> Answer:
        """The whole answer at once (the stream, collected; stages are told nobody reads pieces)."""
        final: Answer | None = None
        async for event in self.stream(replace(query, live=False)):
            if isinstance(event, Answer):
                final = event
        assert final is not None
        return final

    async def stream(self, query: Query) -> AsyncIterator[TextDelta | Answer]:
        """Yield answer pieces as they are produced, then the final ``Answer``."""
        final: Answer | None = None
        async for event in self._route(query):
            if isinstance(event, Answer):
                final = event
            else:
                yield event
        assert final is not None
        line, domains = ("", [])
        if self.disclaimers and query.task != "caption":
            line, domains = disclaimer_for(query.question, detect_language(query.question), self.disclaimers)
        if line:
            yield TextDelta("\n\n" + line)
            final.text = f"{final.text}\n\n{line}"
            final.disclaimer = line
        if not query.include_intermediate:
            final.intermediate = None
        elif domains:
            final.intermediate = (final.intermediate or {}) | {"disclaimer_domains": domains}
        yield final

    # ------------------------------------------------------------ routing

    def _decide(self, query: Query) -> Decision:
        return resolve_route(query.route, self.route_default, self.router, query.question or "")

    async def _route(self, query: Query) -> AsyncIterator[TextDelta | Answer]:
        lang = detect_language(query.question)
        if not query.images:
            async for event in self._text_only(query):
                yield event
            return
        decision = self._decide(query) if query.question and query.task != "caption" else None
        wants_cascade = decision is not None and decision.route == "cascade" and self.language is not None
        if (
            self.vision.is_vlm
            and query.question
            and isinstance(self.vision, StreamingVisionStage)
            and not wants_cascade
        ):
            try:
                async for event in vision_calls.vlm_direct(self, query, decision):
                    yield event
            except VisionDown as exc:  # raised only before the first piece
                yield vision_calls.vision_down(self, query, lang, exc)
            return
        try:
            seen, vision_record, cache_info = await self.see(query)
        except VisionDown as exc:
            yield vision_calls.vision_down(self, query, lang, exc)
            return
        base: dict[str, Any] = {
            "vision_stage": self.vision.name,
            "boxes": seen.boxes,
            "observations": seen.observations,
            "description": seen.description,
            "thinking": seen.thinking,
            "cache": cache_info,
            "route_decision": decision.to_dict() if decision else None,
            "intermediate": {"vision": vision_calls.vision_output(seen)},
        }
        source = seen.answer_source or ""
        if seen.answer is not None and source.startswith("rule"):
            yield TextDelta(seen.answer)
            yield Answer(
                seen.answer,
                "rule",
                language_stage=None,
                confidence=seen.confidence,
                confidence_source=source,
                stages=[vision_record],
                **base,
            )
            return
        if query.task == "caption" or not query.question:
            yield TextDelta(seen.description)
            yield Answer(
                seen.description,
                "direct",
                language_stage=None,
                confidence=seen.confidence,
                confidence_source="vision:top-score",
                stages=[vision_record],
                **base,
            )
            return
        assert decision is not None
        direct_allowed = self.vision.is_vlm or self.direct_without_vlm or decision.strategy == "override"
        if decision.route == "direct" and direct_allowed:
            text = seen.answer if (self.vision.is_vlm and seen.answer is not None) else seen.description
            yield TextDelta(text)
            yield Answer(
                text,
                "direct",
                language_stage=None,
                confidence=seen.confidence,
                confidence_source="vision:model" if self.vision.is_vlm else "vision:top-score",
                stages=[vision_record],
                **base,
            )
            return
        if self.language is None:
            yield TextDelta(seen.description)
            yield Answer(
                seen.description,
                "vision-only",
                language_stage=None,
                stages=[vision_record],
                notice=NOTICE_VISION_ONLY[lang],
                **base,
            )
            return
        async for event in self._cascade(query, seen, vision_record, base, lang):
            yield event

    # ------------------------------------------------------------ vision

    async def see(self, query: Query) -> tuple[VisionResult, StageRecord, dict[str, Any]]:
        """The vision stage's result: from the cache when it holds one, else the stage (guarded)."""
        return await vision_calls.see(self, query)

    # ------------------------------------------------------------ language

    async def _cascade(
        self, query: Query, seen: VisionResult, vision_record: StageRecord, base: dict[str, Any], lang: str
    ) -> AsyncIterator[TextDelta | Answer]:
        assert self.language is not None and query.question
        ocr_text = "\n".join(line["text"] for line in seen.observations.get("text", {}).get("lines", []))
        messages = cascade_messages(query.question, seen.description, ocr_text, lang)  # type: ignore[arg-type]
        base["intermediate"]["language_prompt"] = [{"role": m.role, "content": m.content} for m in messages]
        run = Relay(self._generate(query, messages, [vision_record], "cascade", base))
        async for delta in run:
            yield delta
        final: Answer = run.final
        if final.degraded:
            final.text = seen.description
            final.route = "vision-only"
            final.notice = NOTICE_VISION_ONLY[lang]  # type: ignore[index]
            yield TextDelta(("\n\n" if final.completion_tokens else "") + seen.description)
        elif self.arbiter is not None:
            await arbitrate(self, query, seen, final, lang)
        yield final

    async def _text_only(self, query: Query) -> AsyncIterator[TextDelta | Answer]:
        if self.language is None:
            raise FlashvlError("image_required", "This server has no language stage: send an image.", 400)
        messages = list(query.messages or [])
        if query.question and not messages:
            messages = [ChatMessage("user", query.question)]
        async for event in self._generate(query, messages, [], "text-only", {"vision_stage": None}):
            if isinstance(event, Answer) and event.degraded:
                raise StageUnavailable(
                    self.language.name,
                    "language stage unavailable; retry later",
                    retry_after=self.breakers["language"].retry_after() or 5.0,
                )
            yield event

    async def _generate(
        self,
        query: Query,
        messages: list[ChatMessage],
        records: list[StageRecord],
        route: Route,
        base: dict[str, Any],
    ) -> AsyncIterator[TextDelta | Answer]:
        """The language stage's answer to ``messages`` (with the query's settings), under a timeout
        and the breaker. On failure the final ``Answer`` has ``degraded=True`` (the caller decides
        what to say instead). Not ``query.live``: the stage is asked for the whole answer at once
        (cheaper for some stages)."""
        assert self.language is not None
        request = ChatRequest(
            messages=messages,
            max_tokens=query.max_tokens,
            temperature=query.temperature,
            enable_thinking=query.enable_thinking,
            logprobs=query.confidence,
        )
        start = time.perf_counter()
        final: Generation | None = None
        failure = guarded.Failure("", 0)
        calls = guarded.generate(
            self.language, self.breakers["language"], self.language_timeout_s, request, live=query.live
        )
        async with aclosing(calls) as events:
            async for event in events:
                if isinstance(event, Generation):
                    final = event
                elif isinstance(event, guarded.Failure):
                    failure = event
                else:
                    yield event
        record = StageRecord(
            "language",
            self.language.name,
            time.perf_counter() - start,
            steps=dict(final.timings.steps) if final else {},
        )
        if final is None:
            decision = dict(base.get("route_decision") or {}) | {"degraded_because": failure.reason}
            yield Answer(
                "",
                route,
                language_stage=self.language.name,
                stages=[*records, record],
                degraded=True,
                completion_tokens=failure.emitted,
                **(base | {"route_decision": decision}),
            )
            return
        thinking = final.thinking or base.get("thinking")
        intermediate = base.get("intermediate")
        if intermediate is not None:
            intermediate["language"] = {"text": final.text, "finish_reason": final.finish_reason}
        yield Answer(
            final.text.strip(),
            route,
            language_stage=self.language.name,
            confidence=final.confidence,
            confidence_source="language:token-probability" if final.confidence is not None else None,
            stages=[*records, record],
            prompt_tokens=final.prompt_tokens,
            completion_tokens=final.completion_tokens,
            finish_reason=final.finish_reason,
            **(base | {"thinking": thinking}),
        )
