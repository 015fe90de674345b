"""Redis-backed cache shared by several flashvl instances (redis-py's asyncio client).

Entries are JSON with a TTL set by Redis (``SET ... EX``); Redis's own maxmemory
policy bounds the size. A Redis that is down or slow is a cache miss, never a
failed request: errors are counted in ``stats.errors``.
"""

from __future__ import annotations

import json
from typing import Any

from flashvl.observability import get_logger
from flashvl.pipeline.cache.base import CacheStats

log = get_logger("flashvl.cache")


class RedisVisionCache:
    def __init__(self, url: str, ttl_s: float = 3600.0, timeout_s: float = 0.5) -> None:
        import redis.asyncio as redis

        self.name = "redis"
        self.stats = CacheStats()
        self.ttl_s = ttl_s
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self._client.get(key)
        except Exception as exc:
            self.stats.errors += 1
            self.stats.misses += 1
            log.warning("cache_get_failed", error=type(exc).__name__)
            return None
        if raw is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return json.loads(raw)

    async def set(self, key: str, value: dict[str, Any]) -> None:
        try:
            await self._client.set(key, json.dumps(value, ensure_ascii=False), ex=max(1, int(self.ttl_s)))
        except Exception as exc:
            self.stats.errors += 1
            log.warning("cache_set_failed", error=type(exc).__name__)

    async def evicted_keys(self) -> int:
        """Redis's own eviction counter (INFO stats), for the metrics."""
        info = await self._client.info("stats")
        return int(info.get("evicted_keys", 0)) + int(info.get("expired_keys", 0))

    async def close(self) -> None:
        await self._client.aclose()
