"""One pure-ASGI gate in front of the app: client address -> allowlist -> auth -> scope ->
rate limits -> in-flight caps -> the model queue. Refusals are the API's JSON error shape.

Public without credentials: /healthz, /readyz, the page (/ and /static/*), /metrics
when ``metrics_public`` (else it needs the admin scope), /docs and /openapi.json when
``docs_public``. Everything else needs a credential once API keys or JWT are configured.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

from starlette.types import ASGIApp, Receive, Scope, Send

from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.observability import Metrics
from flashvl.security.auth import ANONYMOUS, Authenticator, Principal
from flashvl.security.limits import InFlight, ModelGate, RateLimits
from flashvl.security.network import ClientAddressPolicy

ALWAYS_PUBLIC = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
MODEL_PATHS = frozenset({"/infer", "/caption", "/api/predict", "/v1/chat/completions"})


def required_scope(path: str, settings: Settings) -> str | None:
    """The scope a path needs, or None if it is public."""
    if path in ALWAYS_PUBLIC or path.startswith("/static/"):
        return None
    if path == "/metrics":
        return None if settings.metrics_public else "admin"
    if path in DOCS_PATHS:
        return None if settings.docs_public else "infer"
    if path.startswith("/admin"):
        return "admin"
    if "batch" in path:
        return "batch"
    return "infer"


def is_model_path(path: str) -> bool:
    return path in MODEL_PATHS or "batch" in path


class SecurityGate:
    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.auth = Authenticator(settings)
        self.addresses = ClientAddressPolicy(settings.ip_allowlist, settings.trusted_proxies)
        self.rates = RateLimits(settings.rate_limit_per_key, settings.rate_limit_per_ip, settings.rate_limit_storage)
        self.key_flight = InFlight(settings.concurrency_per_key, "API key")
        self.ip_flight = InFlight(settings.concurrency_per_ip, "client address")
        self.gate = ModelGate(settings.model_max_concurrent, settings.model_max_queue, settings.model_queue_timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        path = scope.get("path", "")
        peer = (scope.get("client") or (None, None))[0]
        address = self.addresses.client_address(peer, headers.get("x-forwarded-for"))
        state = scope.setdefault("state", {})
        state["client_address"] = str(address) if address else None
        checked = False
        try:
            async with AsyncExitStack() as stack:
                if not self.addresses.allowed(address):
                    raise FlashvlError("ip_not_allowed", "Your address is not allowed to use this server.", 403)
                scope_needed = required_scope(path, self.settings)
                if scope_needed is not None:
                    principal = self._principal(scope_needed, headers)
                    state["principal"] = principal.name
                    await self._limit(stack, principal, str(address) if address else "unknown", path)
                checked = True
                await self.app(scope, receive, send)
        except FlashvlError as exc:
            if checked:  # raised by the app itself after our checks: not ours to answer
                raise
            await self._refuse(scope, send, exc)

    def _principal(self, scope_needed: str, headers: dict[str, str]) -> Principal:
        principal = self.auth.authenticate(headers.get("authorization"), headers.get("x-api-key"))
        if not principal.has(scope_needed):
            raise FlashvlError("insufficient_scope", f"This credential lacks the '{scope_needed}' scope.", 403)
        return principal

    async def _limit(self, stack: AsyncExitStack, principal: Principal, ip: str, path: str) -> None:
        if principal is not ANONYMOUS:
            await self.rates.hit("key", principal.name)
        await self.rates.hit("ip", ip)
        if principal is not ANONYMOUS:
            await stack.enter_async_context(self.key_flight.hold(principal.name))
        await stack.enter_async_context(self.ip_flight.hold(ip))
        if is_model_path(path):
            await stack.enter_async_context(self.gate.slot())

    async def _refuse(self, scope: Scope, send: Send, exc: FlashvlError) -> None:
        self.metrics.errors.labels(exc.code).inc()
        scope.setdefault("state", {})["error_code"] = exc.code
        headers = [(b"content-type", b"application/json")]
        if exc.retry_after:
            headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
        if exc.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="flashvl"'))
        body = json.dumps({"error": exc.to_dict()}).encode()
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
