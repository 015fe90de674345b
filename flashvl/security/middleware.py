"""One pure-ASGI gate in front of the app: client address -> allowlist -> authentication ->
rate limits -> in-flight caps. Refusals are the API's JSON error shape.

The gate decides *who* is calling, before the body is read: a missing or bad credential on a
non-public path is a 401 here. It puts the ``Principal`` in ``scope["state"]["principal"]``;
*what* that principal may do is declared on each route (flashvl/api/auth.py: ``require_scope``),
which answers 403 ``insufficient_scope``.

Public without credentials: ``PUBLIC_PATHS`` and everything under ``PUBLIC_MOUNTS`` (the page),
/metrics when ``metrics_public``, /docs, /redoc and /openapi.json when ``docs_public``. Everything
else needs a credential once API keys or JWT are configured.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

from starlette.types import ASGIApp, Receive, Scope, Send

from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.observability import Metrics
from flashvl.security.auth import ANONYMOUS, Authenticator, Principal
from flashvl.security.limits import InFlight, RateLimits, SharedInFlight
from flashvl.security.network import ClientAddressPolicy

# The only routes with no scope dependency; tests/security/test_route_scopes.py holds every
# other route of the app to declaring one.
PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/favicon.ico"})
# and everything under them; /static/apidocs: Swagger UI's and ReDoc's files (a package's, no secret)
PUBLIC_MOUNTS = frozenset({"/static", "/static/apidocs"})
METRICS_PATH = "/metrics"  # public when ``metrics_public``, else the admin scope
DOCS_PATHS = frozenset({"/docs", "/redoc", "/openapi.json"})  # public when ``docs_public``, else infer


def is_public(path: str, settings: Settings) -> bool:
    """True when a path is served without a credential (the gate authenticates every other path)."""
    if path in PUBLIC_PATHS or any(path.startswith(mount + "/") for mount in PUBLIC_MOUNTS):
        return True
    if path == METRICS_PATH:
        return settings.metrics_public
    if path in DOCS_PATHS:
        return settings.docs_public
    return False


class SecurityGate:
    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.auth = Authenticator(settings)
        self.addresses = ClientAddressPolicy(settings.ip_allowlist, settings.trusted_proxies)
        self.rates = RateLimits(settings.rate_limit_per_key, settings.rate_limit_per_ip, settings.rate_limit_storage)
        self.key_flight: InFlight | SharedInFlight = InFlight(settings.concurrency_per_key, "API key")
        self.ip_flight: InFlight | SharedInFlight = InFlight(settings.concurrency_per_ip, "client address")
        if settings.rate_limit_storage.startswith("redis"):  # one count across every process on that Redis
            url, ttl = settings.rate_limit_storage, settings.request_timeout_s * 2
            self.key_flight = SharedInFlight(settings.concurrency_per_key, "API key", url, ttl)
            self.ip_flight = SharedInFlight(settings.concurrency_per_ip, "client address", url, ttl)

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
                if not is_public(path, self.settings):
                    principal = self.auth.authenticate(headers.get("authorization"), headers.get("x-api-key"))
                    state["principal"] = principal  # the routes' scope checks and job ownership read it
                    await self._limit(stack, principal, str(address) if address else "unknown", path)
                checked = True
                await self.app(scope, receive, send)
        except FlashvlError as exc:
            if checked:  # raised by the app itself after our checks: not ours to answer
                raise
            await self._refuse(scope, send, exc)

    async def _limit(self, stack: AsyncExitStack, principal: Principal, ip: str, path: str) -> None:
        if principal is not ANONYMOUS:
            await self.rates.hit("key", principal.name)
        await self.rates.hit("ip", ip)
        if principal is not ANONYMOUS:
            await stack.enter_async_context(self.key_flight.hold(principal.name))
        await stack.enter_async_context(self.ip_flight.hold(ip))

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
