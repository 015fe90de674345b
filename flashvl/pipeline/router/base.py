"""The router interface: one question in, "direct" or "cascade" out, with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

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


class Router(Protocol):
    name: str

    def decide(self, question: str) -> Decision: ...
