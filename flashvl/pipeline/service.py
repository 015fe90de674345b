"""The pipeline: one query in, one answer (or a stream of pieces) out.

request -> media intake (done before this) -> route -> stages -> answer.
The API layer and the CLI both call ``Pipeline``; neither knows about models.

Routes:
- ``rule``: the vision stage answered exactly (offline rules: safety, colour,
  counts, OCR text, reference ranges, objects and positions), the whole question.
- ``direct``: the vision stage's own answer (a real VLM, or the offline rule when one
  answers) or description (caption; simple questions when the router says so).
- ``cascade``: the language stage answers from the vision stage's observations,
  then arbitration checks the answer against them.
- ``vision-only``: no language stage, or it is down (breaker open, timeout, error);
  the description is returned with a notice in the question's language.
- ``fallback``: the vision stage is down and the request is moderation-style: a
  labelled keyword check over the text (anything else is a 503 with Retry-After).

``route_decision.route`` is always the route taken; when it is not what the router or the
request chose, ``requested`` keeps that choice and ``changed_because`` says why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from flashvl.errors import FlashvlError, StageUnavailable
from flashvl.pipeline import arbitration as arb
from flashvl.pipeline import language_calls, tool_use, vision_calls
from flashvl.pipeline.arbitration_policy import arbitrate
from flashvl.pipeline.disclaimers import DEFAULT_DISCLAIMER, DomainClassifier, disclaimer_for
from flashvl.pipeline.guarded import Failure, GuardedLanguage, GuardedVision, Seen
from flashvl.pipeline.resilience import CircuitBreaker, VisionDown
from flashvl.pipeline.review.base import ReviewQueue
from flashvl.pipeline.review.memory import MemoryReviewStore
from flashvl.pipeline.router.base import Decision, Router, taken
from flashvl.pipeline.router.override import resolve_route
from flashvl.pipeline.router.rules import KeywordRouter
from flashvl.pipeline.types import NOTICE_VISION_ONLY, Answer, Query, RequestedRoute, Route, StageRecord
from flashvl.stages.base import ChatMessage, Generation, Relay, TextDelta, VisionResult
from flashvl.text.language import detect_language

__all__ = ["NOTICE_VISION_ONLY", "Answer", "Pipeline", "Query", "Route", "StageRecord"]


class Pipeline:
    """Composes a vision stage and an optional language stage, with routing, caching,
    arbitration and degradation around them (all optional; defaults keep the plain cascade)."""

    def __init__(
        self,
        vision: GuardedVision,
        language: GuardedLanguage | None,
        *,
        router: Router | None = None,
        route_default: RequestedRoute = "auto",
        direct_without_vlm: bool = False,
        arbiter: arb.Arbiter | None = None,
        reask: bool = True,
        voter: GuardedLanguage | None = None,
        reviews: ReviewQueue | None = None,
        disclaimers: dict[str, str] | None = DEFAULT_DISCLAIMER,
        domain_classifier: DomainClassifier | None = None,
        tools: bool = False,
        tool_timeout_s: float = 3.0,
    ) -> None:
        self.vision = vision
        self.language = language
        self.router: Router = router or KeywordRouter()
        self.route_default = route_default
        self.direct_without_vlm = direct_without_vlm
        self.arbiter = arbiter
        self.reask = reask
        self.voter = voter
        self.reviews: ReviewQueue = reviews if reviews is not None else MemoryReviewStore()
        self.disclaimers = disclaimers
        self.domain_classifier = domain_classifier  # None: keywords alone decide a question's domain
        self.tools = tools  # exact tools for the cascade's language stage (pipeline/tool_use.py)
        self.tool_timeout_s = tool_timeout_s

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        out = {"vision": self.vision.breaker}
        if self.language is not None:
            out["language"] = self.language.breaker
        return out

    @property
    def cache(self) -> object | None:
        return self.vision.cache

    async def answer(self, query: Query) -> Answer:
        """The whole answer at once (the stream, collected; stages are told nobody reads pieces)."""
        final: Answer | None = None
        async for event in self.stream(replace(query, live=False)):
            if isinstance(event, Answer):
                final = event
        assert final is not None
        return final

    async def stream(self, query: Query) -> AsyncGenerator[TextDelta | Answer, None]:
        """Yield answer pieces as they are produced, then the final ``Answer``."""
        final: Answer | None = None
        async for event in self._route(query):
            if isinstance(event, Answer):
                final = event
            else:
                yield event
        assert final is not None
        line, domains = "", list[str]()
        if self.disclaimers and query.task != "caption" and not final.tool_calls:  # a call is no answer yet
            line, domains = await asyncio.to_thread(  # the classifier embeds the question: off the event loop
                disclaimer_for,
                query.question,
                detect_language(query.question),
                self.disclaimers,
                final.confidence_source,
                self.domain_classifier,
            )
        if line and query.json_schema is not None:  # JSON output stays JSON: the line is in the metadata only
            final.disclaimer = line
        elif line:
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
        if query.needs_language_model:
            # JSON output or the client's system instructions need a model to write the answer: the cascade.
            if self.language is None:
                raise FlashvlError(
                    "language_stage_required",
                    "response_format and system messages on image requests need a language stage, and this "
                    "server has none.",
                    400,
                )
            if not query.question:
                raise FlashvlError("empty_prompt", "Ask a question about the image (a user message with text).", 400)
            decision = resolve_route("cascade", self.route_default, self.router, query.question)
        wants_cascade = decision is not None and decision.route == "cascade" and self.language is not None
        if self.vision.is_vlm and query.question and self.vision.streams and not wants_cascade:
            try:
                async for event in vision_calls.vlm_direct(self, query, decision):
                    yield event
            except VisionDown as exc:  # raised only before the first piece
                yield vision_calls.vision_down(self, query, lang, exc)
            return
        try:
            looked = await self.see(query)
        except VisionDown as exc:
            yield vision_calls.vision_down(self, query, lang, exc)
            return
        seen, vision_record = looked.result, looked.record
        base: dict[str, Any] = {
            "vision_stage": self.vision.name,
            "boxes": seen.boxes,
            "observations": seen.observations,
            "description": seen.description,
            "thinking": seen.thinking,
            "cache": looked.cache,
            "route_decision": decision.to_dict() if decision else None,
            "intermediate": {"vision": vision_calls.vision_output(seen)},
        }
        # Up to the cascade, the answer is the vision stage's own text: its tokens and finish reason.
        usage: dict[str, Any] = {
            "prompt_tokens": seen.prompt_tokens,
            "completion_tokens": seen.completion_tokens,
            "finish_reason": seen.finish_reason,
        }
        source = seen.answer_source or ""
        forced = decision is not None and decision.strategy == "override"  # the request's own choice
        rule_route = self._rule_route(decision, forced, source, query.needs_language_model)
        if seen.answer is not None and source.startswith("rule") and decision is not None and rule_route:
            route, why = rule_route
            base["route_decision"] = taken(decision.to_dict(), route, why)
            yield TextDelta(seen.answer)
            yield Answer(
                seen.answer,
                route,
                language_stage=None,
                confidence=seen.confidence,
                confidence_source=source,
                stages=[vision_record],
                **base,
                **usage,
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
                **usage,
            )
            return
        assert decision is not None
        direct_allowed = self.vision.is_vlm or self.direct_without_vlm or forced
        if decision.route == "direct" and not direct_allowed and self.language is not None:
            base["route_decision"] = taken(
                decision.to_dict(),
                "cascade",
                "the offline pipeline is not a vision-language model: a direct answer would only be its "
                "description, so the language stage answers (--router-direct-without-vlm allows direct)",
            )
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
                **usage,
            )
            return
        if self.language is None:
            base["route_decision"] = taken(decision.to_dict(), "vision-only", "there is no language stage")
            yield TextDelta(seen.description)
            yield Answer(
                seen.description,
                "vision-only",
                language_stage=None,
                stages=[vision_record],
                notice=NOTICE_VISION_ONLY[lang],
                **base,
                **usage,
            )
            return
        async for event in self._cascade(query, seen, vision_record, base, lang):
            yield event

    def _rule_route(
        self, decision: Decision | None, forced: bool, source: str, needs_language_model: bool
    ) -> tuple[Route, str | None] | None:
        """Where a rule's exact answer goes: ("rule", why the router's choice was passed over),
        ("direct", None) for a forced "direct" (the vision stage alone, which here is its rule), or
        None: the language stage answers (a forced "cascade", or the client needs a model's answer)."""
        if needs_language_model or decision is None:
            return None
        if forced and decision.route == "direct":
            return "direct", None
        if forced and decision.route == "cascade":
            if self.language is not None:
                return None
            return "rule", f"route=cascade was asked, but there is no language stage: the rule '{source}' answered"
        return "rule", f"a rule ('{source}') answers this question exactly from the measurements"

    # ------------------------------------------------------------ vision

    async def see(self, query: Query, question: str | None = None, role: str | None = None) -> Seen:
        """The vision stage's result (guarded: cache, admission, breaker, deadline)."""
        return await self.vision.see(vision_calls.vision_request(query, question), role=role)

    # ------------------------------------------------------------ language

    async def _cascade(
        self, query: Query, seen: VisionResult, vision_record: StageRecord, base: dict[str, Any], lang: str
    ) -> AsyncIterator[TextDelta | Answer]:
        assert self.language is not None and query.question
        messages, records, calls = await language_calls.cascade_prompt(self, query, seen, base, lang)
        records.insert(0, vision_record)
        base["intermediate"]["language_prompt"] = [m.to_openai() for m in messages]
        # Questions about one image share the prompt up to the question: the language stage keeps them together.
        prefix_key = query.images[0].sha256 if query.images else None
        run = Relay(self._generate(query, messages, records, "cascade", base, prefix_key))
        held = list[TextDelta]()  # with tool results, the answer is checked against them before it is sent
        async for delta in run:
            if calls:
                held.append(delta)
            else:
                yield delta
        final: Answer = run.final
        if calls and not final.degraded and not tool_use.agrees(final.text, calls):
            exact = tool_use.tool_answer(calls, lang)  # the model's text missed the exact result: say the tools'
            if exact is not None:
                final.text, final.confidence, final.confidence_source = exact, None, "tools"
                held = [TextDelta(exact)]
        for delta in held:
            yield delta
        if final.degraded and query.json_schema is not None:  # a description is no JSON answer
            raise StageUnavailable(
                self.language.name,
                "language stage unavailable; retry later",
                retry_after=self.language.breaker.retry_after() or 5.0,
            )
        if final.degraded:
            final.text = seen.description
            final.route = "vision-only"
            final.notice = NOTICE_VISION_ONLY[lang]
            if final.route_decision is not None:
                because = final.route_decision.get("degraded_because") or "the language stage failed"
                final.route_decision = taken(final.route_decision, "vision-only", f"language stage down: {because}")
            yield TextDelta(("\n\n" if final.completion_tokens else "") + seen.description)
        elif self.arbiter is not None and query.json_schema is None and not final.tool_calls:
            # (a re-ask would not keep the JSON shape; a tool call is checked by the client that runs it)
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
                    retry_after=self.language.breaker.retry_after() or 5.0,
                )
            yield event

    async def _generate(
        self,
        query: Query,
        messages: list[ChatMessage],
        records: list[StageRecord],
        route: Route,
        base: dict[str, Any],
        prefix_key: str | None = None,
    ) -> AsyncIterator[TextDelta | Answer]:
        """The language stage's answer to ``messages`` (with the query's settings), under a timeout
        and the breaker. On failure the final ``Answer`` has ``degraded=True`` (the caller decides
        what to say instead). Not ``query.live``: the stage is asked for the whole answer at once
        (cheaper for some stages)."""
        assert self.language is not None
        request = language_calls.chat_request(query, messages, prefix_key)
        start = time.perf_counter()
        final: Generation | None = None
        failure = Failure("", 0)
        async with aclosing(self.language.stream(request, live=query.live)) as events:
            async for event in events:
                if isinstance(event, Generation):
                    final = event
                elif isinstance(event, Failure):
                    failure = event
                else:
                    yield event
        record = StageRecord(
            "language",
            self.language.name,
            time.perf_counter() - start,
            steps=final.timings.with_tokens() if final else {},  # seconds per step, then *_tokens counts
            replica=final.replica if final else None,
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
            if final.tool_calls:
                intermediate["language"]["tool_calls"] = [call.to_openai() for call in final.tool_calls]
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
            logprobs=final.logprobs,
            tool_calls=final.tool_calls,
            **(base | {"thinking": thinking}),
        )
