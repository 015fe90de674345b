"""The vision cache the settings name (memory LRU/LFU, Redis, or none); one backend per module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from flashvl.pipeline.cache.base import VisionCache

if TYPE_CHECKING:
    from flashvl.config import Settings


def build_cache(settings: Settings) -> VisionCache | None:
    """The cache the settings name, or None (``--vision-cache none``)."""
    kind = settings.vision_cache
    if kind == "none":
        return None
    if kind == "redis":
        from flashvl.pipeline.cache.redis import RedisVisionCache

        return RedisVisionCache(settings.vision_cache_redis_url, ttl_s=settings.vision_cache_ttl_s)
    from flashvl.pipeline.cache.memory import MemoryVisionCache

    policy: Literal["lru", "lfu"] = "lfu" if kind == "memory-lfu" else "lru"
    return MemoryVisionCache(policy, max_items=settings.vision_cache_size, ttl_s=settings.vision_cache_ttl_s)
