"""The router interface: one question in, "direct" or "cascade" out, with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

RouteChoice = Literal["direct", "cascade"]
RequestedRoute = Literal["direct", "cascade", "auto"]


@dataclass(frozen=True)
class Decision:
    route: RouteChoice
    strategy: str  # "rules" | "classifier" | "override"
    reason: str  # e.g. "keyword:为什么", "p(cascade)=0.91"
    score: float | None = None  # the classifier's probability of "cascade"

    def to_dict(self) -> dict[str, object]:
        return {"route": self.route, "strategy": self.strategy, "reason": self.reason, "score": self.score}


def taken(decision: dict[str, Any], route: str, why: str | None) -> dict[str, Any]:
    """``route_decision`` for the route actually taken: its ``route`` is always the response's route;
    when that differs from what the router (or the request) chose, ``requested`` keeps the choice and
    ``changed_because`` says why."""
    if decision.get("route") == route:
        return decision
    requested = decision.get("requested", decision.get("route"))
    return decision | {"route": route, "requested": requested, "changed_because": why or "unstated"}


class Router(Protocol):
    name: str

    def decide(self, question: str) -> Decision: ...
