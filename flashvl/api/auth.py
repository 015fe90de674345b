"""Who may call which route: a scope dependency declared on every router (or route).

The ASGI gate (flashvl/security/middleware.py) has already authenticated the caller, before the
body was read, and put the ``Principal`` in ``request.state.principal``. These dependencies
decide what it may do:

- ``require_scope("batch")`` on a router or route: 403 ``insufficient_scope`` without it
  (``admin`` implies every scope);
- ``Caller``: the principal itself, for handlers that need to know who asks (job ownership,
  who resolved a review item, whose request was flagged).

Routes with no scope dependency are exactly the public ones named in
``flashvl.security.middleware.PUBLIC_PATHS`` / ``PUBLIC_MOUNTS``; a test walks ``app.routes``
to hold every other route to declaring one.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Request

from flashvl.errors import FlashvlError
from flashvl.security.auth import SCOPES, AuthError, Principal

Scope = Literal["infer", "batch", "review", "admin", "kb:read", "kb:write"]


def _principal(request: Request) -> Principal | None:
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else None


async def current_principal(request: Request) -> Principal:
    """The authenticated caller; 401 if the gate did not authenticate this request (fail closed)."""
    principal = _principal(request)
    if principal is None:
        raise AuthError("This route needs an API key or a JWT: 'Authorization: Bearer <token>'.")
    return principal


Caller = Annotated[Principal, Depends(current_principal)]


class RequireScope:
    """A dependency: the caller must hold ``scope``. With ``public_when``, a Settings flag that makes
    the route public (``metrics_public``, ``docs_public``): then no credential is needed at all."""

    def __init__(self, scope: Scope, public_when: str | None = None) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; scopes are {sorted(SCOPES)}")
        self.scope = scope
        self.public_when = public_when

    async def __call__(self, request: Request) -> Principal | None:
        if self.public_when is not None and getattr(request.app.state.flashvl.settings, self.public_when):
            return _principal(request)
        principal = await current_principal(request)
        if not principal.has(self.scope):
            raise FlashvlError("insufficient_scope", f"This credential lacks the '{self.scope}' scope.", 403)
        return principal

    def __repr__(self) -> str:
        return f"require_scope({self.scope!r}{f', public_when={self.public_when!r}' if self.public_when else ''})"


def require_scope(scope: Scope, *, public_when: str | None = None) -> RequireScope:
    """``APIRouter(dependencies=[Depends(require_scope("batch"))])``."""
    return RequireScope(scope, public_when)
