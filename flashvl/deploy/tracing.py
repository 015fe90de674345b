"""OpenTelemetry spans across processes: the ingress request, each stage call, each replica's work.

One trace per request: the ingress opens ``flashvl.request`` (attribute ``flashvl.request_id``),
each stage call a ``flashvl.stage.<role>.<method>`` client span, whose context travels to the
replica in a small carrier dict (W3C ``traceparent``) next to the request, where the replica's
``flashvl.replica.<role>.<method>`` span continues it. Spans are made through the OpenTelemetry
API: with no SDK provider installed (``--no-tracing``, the default) they cost nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashvl.config import Settings

TRACER = "flashvl"
_configured = False


def configure_tracing(settings: Settings) -> None:
    """Install an SDK tracer provider in this process when ``--tracing`` (once; a provider already
    installed, e.g. a test's in-memory exporter, is kept). OTLP export when an endpoint is set."""
    global _configured
    if not settings.tracing or _configured:
        return
    _configured = True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": "flashvl"}))
    if settings.tracing_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.tracing_otlp_endpoint)))
    trace.set_tracer_provider(provider)


def carrier() -> dict[str, str]:
    """The current span's context, to send with a stage call."""
    out: dict[str, str] = {}
    propagate.inject(out)
    return out


@contextmanager
def client_span(name: str, **attributes: Any) -> Iterator[Span]:
    with trace.get_tracer(TRACER).start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span


@contextmanager
def replica_span(name: str, context: dict[str, str] | None, **attributes: Any) -> Iterator[Span]:
    """A replica's work, continuing the caller's trace (``context``: what ``carrier`` made)."""
    parent = propagate.extract(context or {})
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes) as span:
        yield span


class TraceRequests:
    """ASGI middleware: one ``flashvl.request`` span per HTTP request, tagged with its request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        parent = propagate.extract(headers)  # a caller's own traceparent is continued
        tracer = trace.get_tracer(TRACER)
        attributes = {"http.method": scope.get("method", ""), "http.target": scope.get("path", "")}
        with tracer.start_as_current_span(
            "flashvl.request", context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.status_code", int(message.get("status", 0)))
                    for key, value in message.get("headers") or []:
                        if key.lower() == b"x-request-id":
                            span.set_attribute("flashvl.request_id", value.decode("latin-1"))
                await send(message)

            await self.app(scope, receive, traced_send)


class ReplicaHeader:
    """ASGI middleware: ``x-flashvl-replica`` on every response names the ingress replica that
    answered it (the stages' replicas are in the body's ``stages[].replica``)."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.header = (b"x-flashvl-replica", name.encode("latin-1", "replace"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*(message.get("headers") or []), self.header]}
            await send(message)

        await self.app(scope, receive, tagged_send)
