"""What route handlers get injected: the app's state, readiness, and shared helpers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.media import MediaIntake
from flashvl.observability import Metrics, get_logger
from flashvl.pipeline.service import Answer, Pipeline, Query
from flashvl.stages.registry import StageBuilder

log = get_logger("flashvl.payload")


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    intake: MediaIntake
    pipeline: Pipeline
    stages: StageBuilder | None = None  # builds (and shares) the stages the settings name
    stage_status: dict[str, str] = field(default_factory=dict)
    load_task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return bool(self.stage_status) and all(v == "ready" for v in self.stage_status.values())


async def get_state(request: Request) -> AppState:  # async: no thread hop per request
    return request.app.state.flashvl


async def ready_state(request: Request) -> AppState:
    """The state, or a 503 with Retry-After while models are still loading."""
    state: AppState = request.app.state.flashvl
    if not state.ready:
        failed = {k: v for k, v in state.stage_status.items() if v.startswith("failed")}
        if failed:
            raise FlashvlError("stage_failed", f"A stage failed to load: {failed}", 503, retry_after=30)
        raise FlashvlError("loading", "Models are still loading; retry shortly (see /readyz).", 503, retry_after=5)
    return state


Ready = Annotated[AppState, Depends(ready_state)]
State = Annotated[AppState, Depends(get_state)]


def resolve_max_tokens(state: AppState, requested: int | None) -> int:
    limit = state.settings.max_tokens_limit
    if requested is not None and requested > limit:
        raise FlashvlError(
            "max_tokens_too_large", f"max_tokens {requested} is over this server's limit of {limit}.", 400
        )
    return requested or state.settings.max_tokens


async def answer_query(request: Request, state: AppState, query: Query) -> Answer:
    """Run the pipeline under the request deadline and record what happened."""
    try:
        async with asyncio.timeout(state.settings.request_timeout_s):
            answer = await state.pipeline.answer(query)
    except TimeoutError:
        raise FlashvlError(
            "request_timeout",
            f"The answer took longer than {state.settings.request_timeout_s:g}s; "
            "try a shorter max_tokens or a smaller image.",
            504,
            retry_after=5,
        ) from None
    record_answer(request, state, answer, query)
    return answer


def record_answer(request: Request, state: AppState, answer: Answer, query: Query | None = None) -> None:
    """Metrics per stage and route; what the access log line reports.

    Prompt and answer text are logged only with ``--log-payloads`` (a debug flag).
    """
    if state.settings.log_payloads and query is not None:
        log.debug("payload", prompt=query.question, answer=answer.text)
    for stage in answer.stages:
        state.metrics.stage_latency.labels(stage.name, stage.backend).observe(stage.seconds)
    state.metrics.routes.labels(answer.route).inc()
    request.state.route = answer.route
    request.state.stages = {s.name: round(s.seconds, 4) for s in answer.stages}


def meta(request: Request, answer: Answer) -> dict[str, Any]:
    return answer.meta() | {"request_id": getattr(request.state, "request_id", None)}
