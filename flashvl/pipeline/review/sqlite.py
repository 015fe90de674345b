"""The review queue in one SQLite file (``--review-store sqlite``): survives a restart and is shared by
every process of one machine on the same file. The thumbnail has its own BLOB column next to the item's JSON."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from flashvl.pipeline.review.base import ReviewItem, dump_item, load_item


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
                (item.id, item.status, dump_item(item), item.thumbnail),
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
        return [load_item(*row) for row in rows]

    def get(self, item_id: str) -> ReviewItem | None:
        with self._lock:
            row = self._db.execute("SELECT item, thumbnail FROM reviews WHERE id = ?", (item_id,)).fetchone()
        return load_item(*row) if row else None

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
            item = load_item(*row)
            item.mark_resolved(verdict, corrected_answer, note, resolved_by)
            self._db.execute(
                "UPDATE reviews SET status = ?, item = ? WHERE id = ?", (item.status, dump_item(item), item_id)
            )
            self._db.execute("COMMIT")
        return item

    def close(self) -> None:
        with self._lock:
            self._db.close()
