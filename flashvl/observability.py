"""Metrics (prometheus_client) and structured JSON-line logs (structlog).

Metrics live in a registry owned by each app instance, not in module globals, so
several apps (tests, workers) can coexist in one process.
Logs never carry image bytes, prompts or answers unless ``log_payloads`` is on.
"""

from __future__ import annotations

import logging
import sys

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "flashvl_requests_total",
            "HTTP requests by endpoint and status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flashvl_request_seconds",
            "End-to-end request latency by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_latency = Histogram(
            "flashvl_stage_seconds",
            "Time spent in each stage.",
            ["stage", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "flashvl_errors_total",
            "Refusals and failures by stable error code.",
            ["code"],
            registry=self.registry,
        )
        self.routes = Counter(
            "flashvl_routes_total",
            "Answers by route (rule, direct, cascade, ...).",
            ["route"],
            registry=self.registry,
        )
        self.tool_calls = Histogram(
            "flashvl_tool_call_seconds",
            "The language stage's tool calls (flashvl/tools/) by tool and outcome (ok, error).",
            ["tool", "outcome"],
            buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 5.0),
            registry=self.registry,
        )
        self.in_flight = Gauge("flashvl_requests_in_flight", "Requests being served.", registry=self.registry)
        self.ready = Gauge("flashvl_ready", "1 when every stage is loaded.", registry=self.registry)
        self.batch_size = Histogram(
            "flashvl_batch_size",
            "Requests generated together per batch, by in-process stage.",
            ["stage"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=self.registry,
        )


def configure_logging(level: str = "info", *, tracebacks: bool = True) -> None:
    """JSON lines on stderr: one object per event, ISO timestamps. Records of the standard library's
    ``logging`` (uvicorn's, libraries') go through the same renderer, so every line is JSON.
    ``tracebacks=False`` (the CLI without ``--verbose``) shortens an exception to its type and message."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    exceptions = structlog.processors.format_exc_info if tracebacks else _exception_in_one_line
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                exceptions,
                structlog.processors.JSONRenderer(ensure_ascii=False),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error"):  # no handlers of their own: through the root's, as JSON
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[*shared, exceptions, structlog.processors.JSONRenderer(ensure_ascii=False)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # uvicorn's own access log would print paths and clients without our redaction rules.
    logging.getLogger("uvicorn.access").disabled = True


def _exception_in_one_line(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    exc_info = event.pop("exc_info", None)
    if exc_info:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if exc is not None:
            event["error"] = f"{type(exc).__name__}: {exc}"
    return event


def get_logger(name: str = "flashvl") -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
