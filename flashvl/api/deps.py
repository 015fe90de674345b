"""What route handlers get injected: the app's state, readiness, and shared helpers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.media import MediaIntake
from flashvl.observability import Metrics
from flashvl.pipeline.service import Answer, Pipeline


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    intake: MediaIntake
    pipeline: Pipeline
    stage_status: dict[str, str] = field(default_factory=dict)
    load_task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return bool(self.stage_status) and all(v == "ready" for v in self.stage_status.values())


def get_state(request: Request) -> AppState:
    return request.app.state.flashvl


def ready_state(request: Request) -> AppState:
    """The state, or a 503 with Retry-After while models are still loading."""
    state = get_state(request)
    if not state.ready:
        failed = {k: v for k, v in state.stage_status.items() if v.startswith("failed")}
        if failed:
            raise FlashvlError("stage_failed", f"A stage failed to load: {failed}", 503, retry_after=30)
        raise FlashvlError("loading", "Models are still loading; retry shortly (see /readyz).", 503,
                           retry_after=5)
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


def record_answer(request: Request, state: AppState, answer: Answer) -> None:
    """Metrics per stage and route; what the access log line reports."""
    for stage in answer.stages:
        state.metrics.stage_latency.labels(stage.name, stage.backend).observe(stage.seconds)
    state.metrics.routes.labels(answer.route).inc()
    request.state.route = answer.route
    request.state.stages = {s.name: round(s.seconds, 4) for s in answer.stages}


def meta(request: Request, answer: Answer) -> dict[str, Any]:
    return answer.meta() | {"request_id": getattr(request.state, "request_id", None)}
