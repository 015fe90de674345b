"""Answers flagged by arbitration, kept for a person: in memory, or in SQLite so a restart (or
another worker process on the same file) keeps them. Both have the ``ReviewStore`` interface:
``add``, ``list``, ``get``, ``resolve``; both are bounded (the oldest item goes first)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flashvl.pipeline.arbitration import ReviewItem, ReviewStore

__all__ = ["ReviewStore", "SqliteReviewStore", "build_review_store"]


class SqliteReviewStore:
    """The review queue in one SQLite file (WAL; each call is one short transaction)."""

    def __init__(self, path: Path, max_items: int = 1000) -> None:
        self.path = Path(path).expanduser()
        self.max_items = max_items
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS reviews (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, "
            "status TEXT NOT NULL, item TEXT NOT NULL)"
        )

    def add(self, **fields: Any) -> ReviewItem:
        item = ReviewItem(id=uuid.uuid4().hex[:16], created=time.time(), **fields)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO reviews (id, status, item) VALUES (?, ?, ?)", (item.id, item.status, _dump(item))
            )
            self._db.execute("DELETE FROM reviews WHERE seq <= (SELECT MAX(seq) FROM reviews) - ?", (self.max_items,))
            self._db.execute("COMMIT")
        return item

    def list(self, status: str | None = None) -> list[ReviewItem]:
        with self._lock:
            if status is None:
                rows = self._db.execute("SELECT item FROM reviews ORDER BY seq").fetchall()
            else:
                rows = self._db.execute("SELECT item FROM reviews WHERE status = ? ORDER BY seq", (status,)).fetchall()
        return [_load(row[0]) for row in rows]

    def get(self, item_id: str) -> ReviewItem | None:
        with self._lock:
            row = self._db.execute("SELECT item FROM reviews WHERE id = ?", (item_id,)).fetchone()
        return _load(row[0]) if row else None

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
            row = self._db.execute("SELECT item FROM reviews WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                self._db.execute("ROLLBACK")
                return None
            item = _load(row[0])
            item.mark_resolved(verdict, corrected_answer, note, resolved_by)
            self._db.execute(
                "UPDATE reviews SET status = ?, item = ? WHERE id = ?", (item.status, _dump(item), item_id)
            )
            self._db.execute("COMMIT")
        return item

    def close(self) -> None:
        with self._lock:
            self._db.close()


def build_review_store(kind: str, path: Path, max_items: int) -> ReviewStore | SqliteReviewStore:
    if kind == "sqlite":
        return SqliteReviewStore(path, max_items)
    if kind == "memory":
        return ReviewStore(max_items)
    raise ValueError(f"review_store must be 'sqlite' or 'memory', not {kind!r}")


def _dump(item: ReviewItem) -> str:
    return json.dumps(asdict(item), ensure_ascii=False)


def _load(text: str) -> ReviewItem:
    return ReviewItem(**json.loads(text))  # items written before owner/resolved_by existed take the defaults
