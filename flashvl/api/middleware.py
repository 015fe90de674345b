"""Pure-ASGI middleware: body-size cap, request ids, metrics, access logs, security headers.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses stream and a client
disconnect reaches the handler, which cancels generation.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashvl.observability import Metrics, get_logger

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


class BodyTooLarge(Exception):
    pass


def _error_body(code: str, message: str) -> bytes:
    kind = "invalid_request_error"
    return json.dumps({"error": {"code": code, "message": message, "type": kind}}).encode()


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` while they stream in, not after.

    A declared Content-Length over the cap is refused before a byte is read;
    a chunked body is counted as it arrives and cut off at the cap.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = _error_body(
            "request_too_large",
            f"The request body is larger than {self.max_bytes} bytes. Send a smaller image "
            "(see max_image_bytes) or fewer images.",
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RequestContext:
    """Request id, security headers, metrics and one JSON log line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = get_logger("flashvl.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        start = time.perf_counter()
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def wrapped_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                    *SECURITY_HEADERS,
                ]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, wrapped_send)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            endpoint = _endpoint(scope)
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(elapsed)
            state: dict[str, Any] = scope.get("state", {})
            self.log.info(
                "request",
                endpoint=endpoint,
                method=scope.get("method"),
                status=status,
                latency_ms=round(elapsed * 1000, 1),
                route=state.get("route"),
                stages=state.get("stages"),
                error_code=state.get("error_code"),
                # a key's name or a JWT's sub, never the credential
                principal=getattr(state.get("principal"), "name", None),
            )
            structlog.contextvars.unbind_contextvars("request_id")


def _endpoint(scope: Scope) -> str:
    """The route template (bounded label values), not the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path or "unmatched"
