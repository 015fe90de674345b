"""Model-queue admission: a bounded FIFO in front of the model stages, shared by every use case.

At most ``max_concurrent`` stage calls run at once and at most ``max_queue`` wait, each for at most
``queue_timeout_s``; past that the caller gets 503 ``server_busy`` with Retry-After. Guarded stage
calls (``pipeline/guarded.py``) take a slot around each stage call, after the request's body has
been read and checked, so a slow or oversized upload never holds a model slot.

``ModelGate`` is one process's queue. With more than one process (ingress replicas, several
``flashvl serve``), ``--model-queue-redis-url`` makes it one queue for all of them
(``admission_redis.RedisModelGate``, built by the runtime); both have the ``Admission`` interface.
This module imports no implementation but its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from flashvl.errors import FlashvlError


class Admission(Protocol):
    """What guarded stage calls take a slot from: ``slot()`` holds one model slot for its body, or
    raises 503 ``server_busy`` (Retry-After) when the queue is full or the wait runs out."""

    max_concurrent: int
    max_queue: int

    @property
    def queued(self) -> int:
        """Requests of this process waiting for a slot."""
        ...

    @property
    def active(self) -> int:
        """Slots this process holds."""
        ...

    def slot(self) -> AbstractAsyncContextManager[None]: ...


def server_busy(message: str, queue_timeout_s: float) -> FlashvlError:
    """503 ``server_busy`` with Retry-After (a quarter of the longest wait, at least 1 s)."""
    return FlashvlError("server_busy", message, 503, retry_after=max(1.0, queue_timeout_s / 4))


class ModelGate:
    """A bounded FIFO in front of the model stages."""

    def __init__(self, max_concurrent: int, max_queue: int, queue_timeout_s: float) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self.waiters)

    def _busy(self, message: str) -> FlashvlError:
        return server_busy(message, self.queue_timeout_s)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.active >= self.max_concurrent or self.waiters:
            if len(self.waiters) >= self.max_queue:
                raise self._busy(f"The model queue is full ({self.max_queue} waiting); retry shortly.")
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self.queue_timeout_s)
            except (TimeoutError, asyncio.CancelledError) as exc:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # the slot was handed over just as we gave up: pass it on
                else:
                    waiter.cancel()
                    self.waiters.remove(waiter)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise self._busy(f"Waited {self.queue_timeout_s:g} s for a model slot; retry shortly.") from None
        else:
            self.active += 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        """Hand the slot to the oldest waiter, or free it."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return  # ``active`` is unchanged: the slot moved to the waiter
        self.active -= 1


class ModelQueueCollector:
    """Prometheus view of a model gate, read at scrape time: ``flashvl_model_queue_depth`` (this
    process's requests waiting for a model slot; the Kubernetes HPA's custom metric,
    deploy/kubernetes/) and ``flashvl_model_slots_in_use`` (its stage calls running). A gate shared
    in Redis (one with ``shared_counts()``) adds the whole queue's ``flashvl_model_queue_shared_depth``
    and ``flashvl_model_slots_shared_in_use`` (every process reports the same value: take the max)."""

    def __init__(self, gate: Callable[[], Admission | None]) -> None:
        self._gate = gate

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        gate = self._gate()
        depth = GaugeMetricFamily("flashvl_model_queue_depth", "Requests waiting for a model slot.")
        busy = GaugeMetricFamily("flashvl_model_slots_in_use", "Stage calls running (model slots taken).")
        depth.add_metric([], float(gate.queued if gate is not None else 0))
        busy.add_metric([], float(gate.active if gate is not None else 0))
        yield depth
        yield busy
        shared_counts = getattr(gate, "shared_counts", None)
        if shared_counts is not None:
            counts = shared_counts()  # (queued, active) across every process, or None: Redis unreachable
            if counts is not None:
                shared_depth = GaugeMetricFamily(
                    "flashvl_model_queue_shared_depth", "Requests waiting for a model slot, every process sharing it."
                )
                shared_busy = GaugeMetricFamily(
                    "flashvl_model_slots_shared_in_use", "Model slots taken, every process sharing the queue."
                )
                shared_depth.add_metric([], float(counts[0]))
                shared_busy.add_metric([], float(counts[1]))
                yield shared_depth
                yield shared_busy
