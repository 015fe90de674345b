"""The FastAPI app factory: settings in, app out. Models load in the background
at start; /healthz answers at once, /readyz turns 200 once every stage is loaded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from flashvl import __version__
from flashvl.api.deps import AppState
from flashvl.api.middleware import BodySizeLimit, RequestContext
from flashvl.api.routes import docs, health, openai, seed
from flashvl.api.routes import jobs as job_routes
from flashvl.api.routes import kb as kb_routes
from flashvl.api.routes import moderate as moderate_routes
from flashvl.api.routes import ocr as ocr_routes
from flashvl.api.routes import review as review_routes
from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.observability import Metrics, get_logger
from flashvl.pipeline.admission import ModelQueueCollector
from flashvl.pipeline.cache.metrics import PipelineCollector
from flashvl.runtime import Runtime
from flashvl.security.middleware import SecurityGate

WEB_ROOT = Path(__file__).resolve().parents[1] / "web" / "static"
FORM_OVERHEAD_BYTES = 64 * 1024
log = get_logger("flashvl.app")


def body_limit(settings: Settings) -> int:
    """Largest request body: every image at the cap, base64-inflated, plus form/JSON overhead."""
    return settings.max_images_per_request * (settings.max_image_bytes * 4 // 3 + 4) + FORM_OVERHEAD_BYTES


class StartupFailed(Exception):
    """A stage could not be built (a bad spec); the message is the one-line cause."""


def startup_failed(exc: Exception, on_fatal: Callable[[str], None] | None) -> StartupFailed:
    """A stage could not be built: log one line, tell the caller (``serve`` exits with it), and fail."""
    cause = f"cannot build the stages: {exc.message if isinstance(exc, FlashvlError) else exc}"
    log.error("startup_failed", cause=cause)
    if on_fatal is not None:
        on_fatal(cause)
    return StartupFailed(cause)


@asynccontextmanager
async def serving(
    state: AppState, runtime: Runtime, on_fatal: Callable[[str], None] | None, **ready: Any
) -> AsyncIterator[None]:
    """Serve while the stages load in the background (``/readyz`` says when); on shutdown stop loading
    and close the runtime. Shared by the full app and the one-stage app."""
    state.load_task = asyncio.create_task(load_or_report(runtime, on_fatal, **ready))
    try:
        yield
    finally:
        state.load_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await state.load_task
        await runtime.close()


async def load_or_report(runtime: Runtime, on_fatal: Callable[[str], None] | None, **ready: Any) -> None:
    """Load every stage; one ``startup_failed`` line (and ``on_fatal``) if any failed, else a ``ready`` line."""
    began = time.perf_counter()
    await runtime.start()
    failed = {role: status for role, status in runtime.stage_status.items() if status.startswith("failed")}
    if failed:
        cause = "; ".join(
            f"the {role} stage failed to load: {status.removeprefix('failed: ')}" for role, status in failed.items()
        )
        log.error("startup_failed", cause=cause)
        if on_fatal is not None:
            on_fatal(cause)
        return
    log.info("ready", **ready, seconds=round(time.perf_counter() - began, 3), stages=runtime.load_seconds)


def add_http_layers(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Error handlers and the middleware stack every flashvl app has (the full app and a stage-only one):
    request context -> CORS (only if origins are listed) -> security gate -> body and header limits."""
    _install_error_handlers(app, metrics)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=body_limit(settings),
        read_timeout_s=settings.body_read_timeout_s,
        min_bytes_per_s=settings.body_min_bytes_per_s,
        max_headers=settings.max_header_count,
        max_header_bytes=settings.max_header_bytes,
    )
    # Auth, address allowlist, rate/concurrency limits (flashvl/security, SECURITY.md).
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


def create_app(
    settings: Settings, *, on_fatal: Callable[[str], None] | None = None, stages: Mapping[str, Any] | None = None
) -> FastAPI:
    """Build the app. Its lifespan builds the runtime (``flashvl/runtime.py``), opens the job queue,
    and loads the stages in the background (``/readyz`` says when they are ready), then logs one
    ``ready`` line with each stage's load time.

    ``on_fatal`` (``flashvl serve``: stop the server, exit non-zero) is called with a one-line cause
    when a stage cannot be built or loaded; without it a failed stage leaves ``/readyz`` at 503.
    ``stages``: stage objects built elsewhere, by role, for the runtime (``flashvl/deploy``: Ray Serve)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            runtime = Runtime(settings, metrics=metrics, stages=stages)
        except Exception as exc:  # a bad stage spec: nothing to serve
            raise startup_failed(exc, on_fatal) from None
        state = AppState(runtime, metrics)
        app.state.flashvl = state
        metrics.registry.register(PipelineCollector(lambda: runtime.pipeline))
        metrics.registry.register(ModelQueueCollector(lambda: runtime.admission))
        jobs = runtime.open_jobs()
        if settings.jobs_worker:
            jobs.start()
        async with serving(state, runtime, on_fatal):
            yield

    app = FastAPI(
        title="flashvl",
        version=__version__,
        description="Image question answering: seed endpoints, OpenAI-compatible chat completions, health.",
        lifespan=lifespan,
        # Served by flashvl/api/routes/docs.py instead, under a scope dependency like every route.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(seed.router)
    app.include_router(openai.router)
    app.include_router(health.router)
    app.include_router(review_routes.router)
    app.include_router(moderate_routes.router)
    app.include_router(ocr_routes.router)
    app.include_router(job_routes.router)
    app.include_router(kb_routes.router)
    app.include_router(docs.router)
    add_http_layers(app, settings, metrics)
    # Swagger UI's and ReDoc's files (a package's, not a CDN's) for /docs and /redoc; before /static.
    app.mount(docs.ASSETS_URL, StaticFiles(directory=docs.ASSETS_DIR), name="apidocs")
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
