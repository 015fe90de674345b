"""Prometheus view of the pipeline's cache and breakers (read at scrape time)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class PipelineCollector:
    """``flashvl_vision_cache_{hits,misses,evictions,errors}_total``, ``flashvl_breaker_open``,
    ``flashvl_breaker_faults_total{stage,kind}`` and ``flashvl_breaker_trips_total``."""

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
        faults = CounterMetricFamily(
            "flashvl_breaker_faults",
            "Stage failures counted against a breaker, by kind (timeout, error, unavailable); never client errors.",
            labels=["stage", "kind"],
        )
        trips = CounterMetricFamily("flashvl_breaker_trips", "Times a stage's breaker opened.", labels=["stage"])
        for role, breaker in getattr(pipeline, "breakers", {}).items():
            breakers.add_metric([role], 0.0 if breaker.state == "closed" else 1.0)
            trips.add_metric([role], float(getattr(breaker, "trips", 0)))
            for kind, count in sorted(getattr(breaker, "faults", {}).items()):
                faults.add_metric([role, kind], float(count))
        yield breakers
        yield faults
        yield trips
