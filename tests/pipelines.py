"""Tests build small pipelines around plain stage objects (real or scripted) the way the runtime
does: every stage behind a guarded call (breaker, deadline, optional cache and admission)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from flashvl.pipeline.cache.base import VisionCache
from flashvl.pipeline.guarded import GuardedLanguage, GuardedVision
from flashvl.pipeline.resilience import CircuitBreaker
from flashvl.pipeline.service import Pipeline
from flashvl.stages.base import ChatRequest, Generation, TextDelta


def build_pipeline(
    vision: Any,
    language: Any = None,
    *,
    cache: VisionCache | None = None,
    breaker_failures: int = 3,
    breaker_reset_s: float = 5.0,
    vision_timeout_s: float = 30.0,
    language_timeout_s: float = 100.0,
    voter: Any = None,
    **options: Any,
) -> Pipeline:
    def breaker(role: str) -> CircuitBreaker:
        return CircuitBreaker(role, breaker_failures, breaker_reset_s)

    guarded_vision = GuardedVision(vision, breaker=breaker("vision"), timeout_s=vision_timeout_s, cache=cache)
    guarded_language = (
        GuardedLanguage(language, breaker=breaker("language"), timeout_s=language_timeout_s) if language else None
    )
    guarded_voter = (
        GuardedLanguage(voter, breaker=breaker("voter"), timeout_s=language_timeout_s, role="voter") if voter else None
    )
    return Pipeline(guarded_vision, guarded_language, voter=guarded_voter, **options)


class ScriptedLanguage:
    """A language stage that always gives ``answer`` (for tests of what happens around the answer)."""

    name = "scripted"
    model_id = "scripted"

    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def load(self) -> None: ...

    async def close(self) -> None: ...

    def fingerprint(self) -> dict[str, str]:
        return {"model_id": self.model_id}

    async def generate(self, request: ChatRequest) -> Generation:
        return Generation(self.name, self.answer)

    async def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | Generation]:
        yield TextDelta(self.answer)
        yield Generation(self.name, self.answer)
