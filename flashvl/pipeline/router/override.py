"""The per-request override: ``route`` = "direct" | "cascade" | "auto" (ask the router)."""

from __future__ import annotations

from flashvl.pipeline.router.base import Decision, RequestedRoute, Router


def resolve_route(requested: RequestedRoute | None, default: RequestedRoute, router: Router, question: str) -> Decision:
    """The request's own choice wins; "auto" (or none, with an "auto" default) asks ``router``."""
    choice = requested or default
    if choice in ("direct", "cascade"):
        source = "override" if requested else "default"
        return Decision(choice, source, f"route={choice} ({'request' if requested else 'server default'})")
    return router.decide(question)
