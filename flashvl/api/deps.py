"""What route handlers get injected: the app's state, readiness, and shared helpers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from flashvl.api.schemas import ResponseMeta
from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.media import MediaIntake
from flashvl.observability import Metrics, get_logger
from flashvl.pipeline.service import Answer, Pipeline, Query
from flashvl.runtime import Runtime

log = get_logger("flashvl.payload")


@dataclass
class AppState:
    """What routes see: the runtime (built by the app's lifespan) and the app's metrics."""

    runtime: Runtime
    metrics: Metrics
    load_task: asyncio.Task[None] | None = None

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def intake(self) -> MediaIntake:
        return self.runtime.intake

    @property
    def pipeline(self) -> Pipeline:
        return self.runtime.pipeline

    @property
    def stage_status(self) -> dict[str, str]:
        return self.runtime.stage_status

    @property
    def ready(self) -> bool:
        return self.runtime.ready


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
    state.metrics.routes.labels(answer.route).inc()
    for call in answer.tools or []:
        state.metrics.tool_calls.labels(call["name"], "error" if call.get("error") else "ok").observe(call["seconds"])
    request.state.route = answer.route
    request.state.stages = {s.name: round(s.seconds, 4) for s in answer.stages}


def meta(request: Request, answer: Answer) -> ResponseMeta:
    """The response metadata every answering route returns (one definition: ``ResponseMeta``)."""
    return ResponseMeta.of(answer, getattr(request.state, "request_id", None))
