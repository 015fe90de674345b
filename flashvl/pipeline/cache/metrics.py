"""Prometheus view of the pipeline's cache and breakers (read at scrape time)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class PipelineCollector:
    """``flashvl_vision_cache_{hits,misses,evictions,errors}_total`` and ``flashvl_breaker_open``."""

    def __init__(self, pipeline: Callable[[], Any]) -> None:
        self._pipeline = pipeline

    def collect(self) -> Iterator[Any]:
        pipeline = self._pipeline()
        cache = getattr(pipeline, "cache", None)
        if cache is not None:
            for field, value in cache.stats.to_dict().items():
                family = CounterMetricFamily(
                    f"flashvl_vision_cache_{field}", f"Vision cache {field}.", labels=["backend"]
                )
                family.add_metric([cache.name], value)
                yield family
        breakers = GaugeMetricFamily(
            "flashvl_breaker_open", "1 while a stage's circuit breaker is open.", labels=["stage"]
        )
        for role, breaker in getattr(pipeline, "breakers", {}).items():
            breakers.add_metric([role], 0.0 if breaker.state == "closed" else 1.0)
        yield breakers
