"""Rate limits (the ``limits`` library) and in-flight caps per caller. (The model queue is not an
HTTP concern: it is ``flashvl/pipeline/admission.py``, taken by every guarded stage call.)

- Rate: a moving window per API key / JWT subject and per client IP. Counters live in
  memory (one process) or Redis (``rate_limit_storage = redis://...``, shared by workers).
- Concurrency: requests in flight per caller and per IP, counted in this process, or in Redis
  when ``rate_limit_storage`` is a Redis URL (``SharedInFlight``: one count across every ingress
  replica; each count expires after a deadline, so a process that died leaks nothing for long).
"""

from __future__ import annotations

import contextlib
import math
import time
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


class SharedInFlight:
    """``InFlight`` counted in Redis (``INCR``/``DECR`` per identity), shared by every process on it.
    A count expires ``ttl_s`` after the last request began (a crashed process's holds run out).
    Redis unreachable: the cap is not enforced for that request (the rate limits still are)."""

    def __init__(self, limit: int, who: str, url: str, ttl_s: float) -> None:
        import redis.asyncio as redis_async

        self.limit = limit
        self.who = who
        self.ttl_s = max(1, math.ceil(ttl_s))
        self._redis = redis_async.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    @asynccontextmanager
    async def hold(self, identity: str) -> AsyncIterator[None]:
        if not self.limit:
            yield
            return
        key = f"flashvl:inflight:{self.who}:{identity}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                count, _ = await pipe.incr(key).expire(key, self.ttl_s).execute()
        except Exception:
            yield  # no shared count without Redis: let the request through
            return
        try:
            if int(count) > self.limit:
                raise FlashvlError(
                    "too_many_concurrent_requests",
                    f"This {self.who} already has {self.limit} requests in flight; wait for one to finish.",
                    429,
                    retry_after=1,
                )
            yield
        finally:
            with contextlib.suppress(Exception):  # else the count expires by itself
                await self._redis.decr(key)
