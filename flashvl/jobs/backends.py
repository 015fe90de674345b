"""The job store the settings name: ``sqlite`` (default) or ``redis`` (one module per backend)."""

from __future__ import annotations

import os
from typing import Any

from flashvl.jobs.store import JobStore


def open_store(kind: str, *, sqlite_path: str | os.PathLike[str] | None = None, redis_url: str = "") -> JobStore:
    """The configured backend: ``sqlite`` (default) or ``redis``."""
    if kind == "sqlite":
        from flashvl.jobs.sqlite_store import SqliteJobStore

        if sqlite_path is None:
            raise ValueError("the sqlite job store needs a path")
        return SqliteJobStore(sqlite_path)
    if kind == "redis":
        from flashvl.jobs.redis_store import RedisJobStore

        if not redis_url:
            raise ValueError("the redis job store needs --jobs-redis-url")
        return RedisJobStore(redis_url)
    raise ValueError(f"unknown job store {kind!r}: use 'sqlite' or 'redis'")


def store_from_settings(settings: Any) -> JobStore:
    return open_store(settings.jobs_store, sqlite_path=settings.jobs_sqlite_path, redis_url=settings.jobs_redis_url)
