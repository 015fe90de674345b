"""The review store the settings name (``--review-store memory | sqlite | redis``)."""

from __future__ import annotations

from pathlib import Path

from flashvl.pipeline.review.base import ReviewQueue
from flashvl.pipeline.review.memory import MemoryReviewStore
from flashvl.pipeline.review.sqlite import SqliteReviewStore


def build_review_store(
    kind: str,
    path: Path,
    max_items: int,
    thumbnails: bool = True,
    redis_url: str = "",
    redis_prefix: str = "flashvl:reviews",
) -> ReviewQueue:
    if kind == "sqlite":
        return SqliteReviewStore(path, max_items, thumbnails)
    if kind == "memory":
        return MemoryReviewStore(max_items, thumbnails)
    if kind == "redis":  # shared by every process and machine on it (review/redis.py)
        from flashvl.pipeline.review.redis import RedisReviewStore

        if not redis_url:
            raise ValueError("--review-store redis needs --review-redis-url redis://HOST:6379/N")
        return RedisReviewStore(redis_url, max_items, thumbnails, redis_prefix)
    raise ValueError(f"review_store must be 'sqlite', 'memory' or 'redis', not {kind!r}")
