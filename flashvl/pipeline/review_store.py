"""Answers flagged by arbitration, kept for a person: in memory, or in SQLite so a restart (or
another worker process on the same file) keeps them. Both have the ``ReviewStore`` interface:
``add``, ``list``, ``get``, ``resolve``; both are bounded (the oldest item goes first). An item's
``thumbnail`` (a few KB of WebP, or None) lives as long as the item: in SQLite, its own BLOB column next to
the item's JSON; ``thumbnails`` says whether flagged answers get one (``--review-thumbnails``)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flashvl.pipeline.arbitration import ReviewItem, ReviewStore

if TYPE_CHECKING:
    from flashvl.pipeline.review_store_redis import RedisReviewStore

__all__ = ["ReviewStore", "SqliteReviewStore", "build_review_store"]


class SqliteReviewStore:
    """The review queue in one SQLite file (WAL; each call is one short transaction)."""

    def __init__(self, path: Path, max_items: int = 1000, thumbnails: bool = True) -> None:
        self.path = Path(path).expanduser()
        self.max_items = max_items
        self.thumbnails = thumbnails
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS reviews (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, "
            "status TEXT NOT NULL, item TEXT NOT NULL, thumbnail BLOB)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(reviews)")}
        if "thumbnail" not in columns:  # a file written before thumbnails
            self._db.execute("ALTER TABLE reviews ADD COLUMN thumbnail BLOB")

    def add(self, **fields: Any) -> ReviewItem:
        item = ReviewItem(id=uuid.uuid4().hex[:16], created=time.time(), **fields)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO reviews (id, status, item, thumbnail) VALUES (?, ?, ?, ?)",
                (item.id, item.status, _dump(item), item.thumbnail),
            )
            self._db.execute("DELETE FROM reviews WHERE seq <= (SELECT MAX(seq) FROM reviews) - ?", (self.max_items,))
            self._db.execute("COMMIT")
        return item

    def list(self, status: str | None = None) -> list[ReviewItem]:
        with self._lock:
            if status is None:
                rows = self._db.execute("SELECT item, thumbnail FROM reviews ORDER BY seq").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT item, thumbnail FROM reviews WHERE status = ? ORDER BY seq", (status,)
                ).fetchall()
        return [_load(*row) for row in rows]

    def get(self, item_id: str) -> ReviewItem | None:
        with self._lock:
            row = self._db.execute("SELECT item, thumbnail FROM reviews WHERE id = ?", (item_id,)).fetchone()
        return _load(*row) if row else None

    def resolve(
        self,
        item_id: str,
        verdict: str,
        corrected_answer: str | None = None,
        note: str | None = None,
        resolved_by: str | None = None,
    ) -> ReviewItem | None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT item, thumbnail FROM reviews WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                self._db.execute("ROLLBACK")
                return None
            item = _load(*row)
            item.mark_resolved(verdict, corrected_answer, note, resolved_by)
            self._db.execute(
                "UPDATE reviews SET status = ?, item = ? WHERE id = ?", (item.status, _dump(item), item_id)
            )
            self._db.execute("COMMIT")
        return item

    def close(self) -> None:
        with self._lock:
            self._db.close()


def build_review_store(
    kind: str,
    path: Path,
    max_items: int,
    thumbnails: bool = True,
    redis_url: str = "",
    redis_prefix: str = "flashvl:reviews",
) -> ReviewStore | SqliteReviewStore | RedisReviewStore:
    if kind == "sqlite":
        return SqliteReviewStore(path, max_items, thumbnails)
    if kind == "memory":
        return ReviewStore(max_items, thumbnails)
    if kind == "redis":  # shared by every process and machine on it (review_store_redis.py)
        from flashvl.pipeline.review_store_redis import RedisReviewStore

        if not redis_url:
            raise ValueError("--review-store redis needs --review-redis-url redis://HOST:6379/N")
        return RedisReviewStore(redis_url, max_items, thumbnails, redis_prefix)
    raise ValueError(f"review_store must be 'sqlite', 'memory' or 'redis', not {kind!r}")


def _dump(item: ReviewItem) -> str:
    fields = asdict(item)
    del fields["thumbnail"]  # in its own column
    return json.dumps(fields, ensure_ascii=False)


def _load(text: str, thumbnail: bytes | None = None) -> ReviewItem:
    # items written before owner/resolved_by/thumbnail existed take the defaults
    return ReviewItem(**json.loads(text), thumbnail=thumbnail)
