"""Per-request routing: does a question need the language stage ("cascade") or not ("direct")?"""

from flashvl.pipeline.router.base import Decision, RouteChoice, Router
from flashvl.pipeline.router.override import resolve_route

__all__ = ["Decision", "RouteChoice", "Router", "resolve_route"]
