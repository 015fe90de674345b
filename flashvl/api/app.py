"""The FastAPI app factory: settings in, app out. Models load in the background
at start; /healthz answers at once, /readyz turns 200 once every stage is loaded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from flashvl import __version__
from flashvl.api.deps import AppState
from flashvl.api.middleware import BodySizeLimit, RequestContext
from flashvl.api.routes import health, openai, seed
from flashvl.api.routes import jobs as job_routes
from flashvl.api.routes import moderate as moderate_routes
from flashvl.api.routes import ocr as ocr_routes
from flashvl.api.routes import review as review_routes
from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.media import MediaIntake
from flashvl.observability import Metrics, get_logger
from flashvl.pipeline.cache.metrics import PipelineCollector
from flashvl.pipeline.service import Pipeline
from flashvl.security.middleware import SecurityGate
from flashvl.stages.registry import Progress, StageBuilder

WEB_ROOT = Path(__file__).resolve().parents[1] / "web" / "static"
FORM_OVERHEAD_BYTES = 64 * 1024
log = get_logger("flashvl.app")


async def load_stages(state: AppState, progress: Progress | None = None) -> None:
    """Load every stage once; record each one's status for /readyz."""
    pipeline = state.pipeline
    state.stage_status["vision"] = "loading"
    if state.settings.language != "none":
        state.stage_status["language"] = "loading"
    try:
        await pipeline.vision.load()
        _watch_batches(state, pipeline.vision)
        state.stage_status["vision"] = "ready"
        log.info("stage_loaded", stage="vision", backend=pipeline.vision.name)
    except Exception as exc:
        state.stage_status["vision"] = f"failed: {type(exc).__name__}: {exc}"
        log.exception("stage_load_failed", stage="vision")
        return
    if state.settings.language == "none":
        return
    stages = state.stages or StageBuilder(state.settings)
    try:
        language = await stages.language(progress)
        assert language is not None
        await language.load()
        if language is not pipeline.vision:  # one engine may serve both roles: count its batches once
            _watch_batches(state, language)
        pipeline.language = language
        state.stage_status["language"] = "ready"
        log.info("stage_loaded", stage="language", backend=language.name)
        if state.settings.arbitration_voter:
            state.stage_status["voter"] = "loading"
            pipeline.voter = await stages.voter(progress)
            state.stage_status["voter"] = "ready"
            log.info("stage_loaded", stage="voter", backend=pipeline.voter.name)
    except Exception as exc:
        state.stage_status["language"] = f"failed: {type(exc).__name__}: {exc}"
        log.exception("stage_load_failed", stage="language")


def _watch_batches(state: AppState, stage: object) -> None:
    """Feed ``flashvl_batch_size`` from stages that batch in-process (they have ``add_batch_listener``)."""
    add_listener = getattr(stage, "add_batch_listener", None)
    if add_listener is not None:
        histogram = state.metrics.batch_size.labels(getattr(stage, "name", "stage"))
        add_listener(histogram.observe)


def body_limit(settings: Settings) -> int:
    """Largest request body: every image at the cap, base64-inflated, plus form/JSON overhead."""
    return settings.max_images_per_request * (settings.max_image_bytes * 4 // 3 + 4) + FORM_OVERHEAD_BYTES


def create_app(settings: Settings, *, state: AppState | None = None) -> FastAPI:
    """Build the app. Pass a ready ``state`` to share already-loaded stages (tests, CLI)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stages = StageBuilder(settings)
        app_state = state or AppState(
            settings=settings,
            metrics=metrics,
            intake=MediaIntake(settings),
            pipeline=Pipeline.from_settings(settings, stages.vision(), None),
            stages=stages,
        )
        app.state.flashvl = app_state
        metrics.registry.register(PipelineCollector(lambda: app_state.pipeline))
        await job_routes.start_jobs(app, app_state)
        if state is None:
            app_state.load_task = asyncio.create_task(load_stages(app_state))
        try:
            yield
        finally:
            await job_routes.stop_jobs(app)
            if app_state.load_task:
                app_state.load_task.cancel()
            if state is None:
                await app_state.pipeline.vision.close()
                if app_state.pipeline.language:
                    await app_state.pipeline.language.close()
                await app_state.intake.aclose()

    metrics = state.metrics if state else Metrics()
    app = FastAPI(
        title="flashvl",
        version=__version__,
        description="Image question answering: seed endpoints, OpenAI-compatible chat completions, health.",
        lifespan=lifespan,
    )
    app.include_router(seed.router)
    app.include_router(openai.router)
    app.include_router(health.router)
    app.include_router(review_routes.router)
    app.include_router(moderate_routes.router)
    app.include_router(ocr_routes.router)
    app.include_router(job_routes.router)
    _install_error_handlers(app, metrics)
    app.add_middleware(BodySizeLimit, max_bytes=body_limit(settings))
    # Auth, address allowlist, rate/concurrency limits, model queue (flashvl/security, SECURITY.md).
    app.add_middleware(SecurityGate, settings=settings, metrics=metrics)
    if settings.cors_allow_origins:  # CORS is off unless origins are listed explicitly
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
        )
    app.add_middleware(RequestContext, metrics=metrics)
    app.mount("/static", StaticFiles(directory=WEB_ROOT), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_ROOT / "index.html", headers={"cache-control": "no-cache"})

    return app


def _error(
    request: Request, metrics: Metrics, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    metrics.errors.labels(code).inc()
    request.state.error_code = code
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"code": code, "message": message, "type": kind}}, status, headers=headers)


def _install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(FlashvlError)
    async def flashvl_error(request: Request, exc: FlashvlError) -> JSONResponse:
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
        return _error(request, metrics, exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return _error(request, metrics, 422, "invalid_request", "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(request, metrics, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", error=type(exc).__name__)
        return _error(request, metrics, 500, "internal_error", "Internal error; see the server log for the request id.")
