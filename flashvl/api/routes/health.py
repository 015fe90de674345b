"""Liveness, readiness (public), metrics (admin unless ``metrics_public``) and the limits the web page
checks against (infer)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flashvl.api.auth import require_scope
from flashvl.api.deps import State
from flashvl.api.schemas import Health, Limits, Readiness
from flashvl.errors import FlashvlError

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    """The process is up (models may still be loading)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(state: State) -> JSONResponse:
    """200 once every stage is loaded, 503 before."""
    body = {"ready": state.ready, "stages": state.stage_status}
    return JSONResponse(body, status_code=200 if state.ready else 503)


@router.get(
    "/metrics", include_in_schema=False, dependencies=[Depends(require_scope("admin", public_when="metrics_public"))]
)
async def metrics(state: State) -> Response:
    if not state.settings.metrics_enabled:
        raise FlashvlError("not_found", "Metrics are disabled (see --metrics-enabled).", 404)
    state.metrics.ready.set(1 if state.ready else 0)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/limits", response_model=Limits, dependencies=[Depends(require_scope("infer"))])
async def limits(state: State) -> dict[str, object]:
    """Limits a client can check before uploading (the server checks them again)."""
    s = state.settings
    return {
        "max_image_bytes": s.max_image_bytes,
        "max_image_pixels": s.max_image_pixels,
        "allowed_formats": s.allowed_formats,
        "max_tokens_limit": s.max_tokens_limit,
        "max_images_per_request": s.max_images_per_request,
    }
