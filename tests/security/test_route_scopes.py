"""Every route of the app declares the scope it needs, or is listed as public: a walk over ``app.routes``.

A new route without ``require_scope`` (on its router or itself) fails here, before it can ship
open to every key. The gate (ASGI) and the routes must agree on what is public: the gate
authenticates exactly the paths whose routes check a scope.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.routing import Mount

from flashvl.api.app import create_app
from flashvl.api.auth import RequireScope
from flashvl.config import Settings
from flashvl.security.middleware import PUBLIC_MOUNTS, PUBLIC_PATHS, is_public


def routes(app: Any) -> list[Any]:
    """The app's routes with their prefixes and router dependencies applied (FastAPI >= 0.16x includes
    routers lazily; older versions copy them into ``app.routes``)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def scope_checks(route: Any) -> list[RequireScope]:
    def walk(dependant: Any) -> Iterator[Any]:
        for sub in getattr(dependant, "dependencies", []):
            yield sub.call
            yield from walk(sub)

    return [call for call in walk(getattr(route, "dependant", None)) if isinstance(call, RequireScope)]


def expected_scope(path: str, methods: set[str] | frozenset[str] | None = None) -> str:
    if path == "/kb" or path.startswith("/kb/"):  # the knowledge base: reading, or changing a collection
        changes = bool(set(methods or ()) & {"DELETE", "PUT"}) or path.endswith("/grants")
        changes = changes or (path.endswith("/documents") and "POST" in (methods or ()))
        return "kb:write" if changes else "kb:read"
    if path.startswith("/jobs"):
        return "batch"
    if path.startswith("/review"):
        return "review"
    if path == "/metrics":
        return "admin"
    return "infer"  # the model routes, /v1/models, /api/limits, and the docs unless docs_public


def test_every_route_declares_a_scope_or_is_listed_public() -> None:
    app = create_app(Settings())
    undeclared, wrong, public_seen = [], [], set()
    walked = routes(app)
    for route in walked:
        path = route.path
        if isinstance(getattr(route, "original_route", route), Mount):
            assert path in PUBLIC_MOUNTS, f"mount {path} is neither public nor behind a scope"
            public_seen.add(path)
            continue
        checks = scope_checks(route)
        if path in PUBLIC_PATHS:
            assert not checks, f"{path} is listed public but checks {checks}: the gate would never authenticate it"
            public_seen.add(path)
            continue
        if not checks:
            undeclared.append(f"{sorted(route.methods or [])} {path}")
            continue
        wanted = expected_scope(path, route.methods)
        if {c.scope for c in checks} != {wanted}:
            wrong.append(f"{path}: {checks}, expected {wanted!r}")
    assert not undeclared, f"routes without a scope dependency (add require_scope, or list them public): {undeclared}"
    assert not wrong, wrong
    assert len(walked) >= 20, [r.path for r in walked]
    assert {"/", "/healthz", "/readyz", "/static"} <= public_seen


@pytest.mark.parametrize("flag", [False, True])
def test_the_gate_authenticates_exactly_the_scoped_paths(flag: bool) -> None:
    settings = Settings(metrics_public=flag, docs_public=flag)
    for route in routes(create_app(settings)):
        if isinstance(getattr(route, "original_route", route), Mount):
            assert is_public(route.path + "/app.js", settings)
            continue
        checks = scope_checks(route)
        conditional = {c.public_when for c in checks} - {None}
        # Public when the route has no check, or its check yields to a settings flag that is on.
        public = not checks or any(getattr(settings, name) for name in conditional)
        assert is_public(route.path, settings) is public, route.path


def test_public_paths_are_few_and_named() -> None:
    assert {"/", "/healthz", "/readyz", "/favicon.ico"} == PUBLIC_PATHS
    assert {"/static", "/static/apidocs"} == PUBLIC_MOUNTS  # the page; Swagger UI and ReDoc files
    settings = Settings(metrics_public=False, docs_public=False)
    for path in ("/jobs", "/jobs/x/results", "/review", "/review/x/resolve", "/metrics", "/openapi.json", "/x"):
        assert not is_public(path, settings), path
    assert not is_public("/static", settings) and not is_public("/staticx/a", settings)


def test_the_walk_sees_routes_added_on_included_routers() -> None:
    from fastapi import APIRouter, Depends

    from flashvl.api.auth import require_scope

    app = create_app(Settings())
    open_router = APIRouter()
    closed_router = APIRouter(prefix="/closed", dependencies=[Depends(require_scope("batch"))])
    open_router.add_api_route("/forgotten", lambda: {})
    closed_router.add_api_route("/inner", lambda: {})
    app.include_router(open_router)
    app.include_router(closed_router)
    found = {route.path: scope_checks(route) for route in routes(app)}
    assert found["/forgotten"] == []  # the first test would fail on this app
    assert [c.scope for c in found["/closed/inner"]] == ["batch"]
