"""Rate limits (the ``limits`` library), in-flight caps per caller, and the model gate.

- Rate: a moving window per API key / JWT subject and per client IP. Counters live in
  memory (one process) or Redis (``rate_limit_storage = redis://...``, shared by workers).
- Concurrency: requests in flight per caller and per IP, counted in this process.
- Model gate: at most ``model_max_concurrent`` model requests at once and at most
  ``model_max_queue`` waiting, each for at most ``model_queue_timeout_s``. Queued
  requests have not had their bodies read (uvicorn pauses the socket), so a queue
  costs a few KB per waiter, never an image each: memory stays bounded.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from flashvl.errors import FlashvlError


class RateLimited(FlashvlError):
    def __init__(self, who: str, limit: RateLimitItem, retry_after: float) -> None:
        super().__init__(
            "rate_limited",
            f"Too many requests for this {who} (limit {limit}); retry after {math.ceil(retry_after)} s.",
            429,
            retry_after=max(1.0, retry_after),
        )


def build_storage(uri: str) -> Storage:
    uri = uri.strip() or "memory://"
    if uri.startswith("redis"):
        return storage_from_string("async+" + uri, implementation="redispy")
    return storage_from_string("async+" + uri)


class RateLimits:
    """Moving-window limits for keys and IPs; either may be '' (off)."""

    def __init__(self, per_key: str, per_ip: str, storage_uri: str) -> None:
        self.per_key = parse_many(per_key) if per_key.strip() else []
        self.per_ip = parse_many(per_ip) if per_ip.strip() else []
        self.limiter = MovingWindowRateLimiter(build_storage(storage_uri))

    async def hit(self, kind: str, identity: str) -> None:
        """Count one request for ``identity``; raise RateLimited if any of its limits is spent."""
        items = self.per_key if kind == "key" else self.per_ip
        for item in items:
            if not await self.limiter.hit(item, "flashvl", kind, identity):
                stats = await self.limiter.get_window_stats(item, "flashvl", kind, identity)
                raise RateLimited(
                    "API key" if kind == "key" else "client address", item, stats.reset_time - time.time()
                )


class InFlight:
    """Counts requests in flight per identity; refuses past ``limit`` (0: no limit)."""

    def __init__(self, limit: int, who: str) -> None:
        self.limit = limit
        self.who = who
        self.counts: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, identity: str) -> AsyncIterator[None]:
        if self.limit and self.counts.get(identity, 0) >= self.limit:
            raise FlashvlError(
                "too_many_concurrent_requests",
                f"This {self.who} already has {self.limit} requests in flight; wait for one to finish.",
                429,
                retry_after=1,
            )
        self.counts[identity] = self.counts.get(identity, 0) + 1
        try:
            yield
        finally:
            left = self.counts[identity] - 1
            if left:
                self.counts[identity] = left
            else:
                del self.counts[identity]  # the table never keeps idle callers: bounded


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
        return FlashvlError("server_busy", message, 503, retry_after=max(1.0, self.queue_timeout_s / 4))

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
