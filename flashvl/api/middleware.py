"""Pure-ASGI middleware: body-size cap, request ids, metrics, access logs, security headers.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses stream and a client
disconnect reaches the handler, which cancels generation.
"""

from __future__ import annotations

import asyncio
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
# ReDoc (/redoc) styles itself at run time with <style> elements; it alone gets inline styles (never scripts).
REDOC_SECURITY_HEADERS = [
    (name, value.replace(b"style-src 'self'", b"style-src 'self' 'unsafe-inline'")) for name, value in SECURITY_HEADERS
]


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    return REDOC_SECURITY_HEADERS if path == "/redoc" else SECURITY_HEADERS


class BodyRefused(Exception):
    """The body broke a limit while it streamed in (too large, too slow)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error_body(code: str, message: str) -> bytes:
    kind = "invalid_request_error"
    return json.dumps({"error": {"code": code, "message": message, "type": kind}}).encode()


BODY_GRACE_S = 5.0  # before the bytes-per-second floor applies (connection set-up, a slow first chunk)


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` while they stream in, not after, and bodies that
    arrive too slowly: the whole body within ``read_timeout_s``, and after ``BODY_GRACE_S`` at least
    ``min_bytes_per_s`` on average (408 ``request_body_timeout``).

    A declared Content-Length over the cap is refused before a byte is read; a chunked body is
    counted as it arrives and cut off at the cap. The refusal is ours even when the framework
    caught the error while parsing the body (FastAPI turns any error there into a 400).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        read_timeout_s: float = 60.0,
        min_bytes_per_s: int = 0,
        max_headers: int | None = None,
        max_header_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s
        self.min_bytes_per_s = min_bytes_per_s
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes

    def _too_large(self) -> BodyRefused:
        return BodyRefused(
            413,
            "request_too_large",
            f"The request body is larger than {self.max_bytes} bytes. Send a smaller image "
            "(see max_image_bytes) or fewer images.",
        )

    def _deadline(self, started: float, seen: int) -> float:
        deadline = started + self.read_timeout_s
        if self.min_bytes_per_s > 0:
            deadline = min(deadline, started + BODY_GRACE_S + seen / self.min_bytes_per_s)
        return deadline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_headers = scope.get("headers") or []
        if self.max_headers is not None and len(raw_headers) > self.max_headers:
            message = f"The request has {len(raw_headers)} headers; at most {self.max_headers} are accepted."
            await self._refuse(send, BodyRefused(431, "too_many_headers", message))
            return
        head_bytes = sum(len(name) + len(value) + 4 for name, value in raw_headers)
        if self.max_header_bytes is not None and head_bytes > self.max_header_bytes:
            message = f"The request headers take {head_bytes} bytes; at most {self.max_header_bytes} are accepted."
            await self._refuse(send, BodyRefused(431, "headers_too_large", message))
            return
        headers = dict(raw_headers)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, self._too_large())
            return
        seen = 0
        body_done = False
        started = time.monotonic()
        refused: BodyRefused | None = None
        response_started = False

        async def guarded_receive() -> Message:
            nonlocal seen, body_done, refused
            if body_done or refused is not None:
                return await receive()
            remaining = self._deadline(started, seen) - time.monotonic()
            try:
                async with asyncio.timeout(max(0.0, remaining)):
                    message = await receive()
            except TimeoutError:
                refused = BodyRefused(
                    408,
                    "request_body_timeout",
                    f"The request body arrived too slowly ({seen} bytes so far; the whole body must arrive "
                    f"within {self.read_timeout_s:g} s, at {self.min_bytes_per_s} bytes/s or more).",
                )
                raise refused from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = self._too_large()
                    raise refused
                body_done = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused is not None:  # the app answered (a 400 for "error parsing the body"): ours instead
                if message["type"] == "http.response.start" and not response_started:
                    response_started = True
                    await self._refuse(send, refused)
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except BodyRefused as exc:
            if not response_started:
                response_started = True
                await self._refuse(send, exc)

    async def _refuse(self, send: Send, refusal: BodyRefused) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": refusal.status,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": _error_body(refusal.code, refusal.message)})


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
                    *security_headers(scope.get("path", "")),
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
