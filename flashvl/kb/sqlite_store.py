"""The embedded knowledge-base store: one SQLite file (WAL), nothing to install.

Vectors are float32 blobs; search loads a collection's vectors once into one numpy matrix (refreshed
when the collection's ``generation`` changes) and scores them brute force: 10k pages x 384 dims is a
15 MB matrix and one matrix-vector product of a few milliseconds (see ``bench/kb_bench.py``), which needs no
vector-index extension. The queries are shared with the PostgreSQL store (``flashvl/kb/sql_store.py``).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from flashvl.kb.sql_store import SqlKBStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS kb_collections (
  name TEXT PRIMARY KEY, owner TEXT NOT NULL, readers TEXT NOT NULL DEFAULT '[]',
  created_at REAL NOT NULL, generation INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS kb_documents (
  collection TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, pages INTEGER NOT NULL,
  principal TEXT NOT NULL, uploaded_at REAL NOT NULL, PRIMARY KEY (collection, id));
CREATE TABLE IF NOT EXISTS kb_pages (
  collection TEXT NOT NULL, document_id TEXT NOT NULL, page INTEGER NOT NULL, text TEXT NOT NULL,
  lines TEXT NOT NULL, description TEXT NOT NULL, embedding BLOB NOT NULL, phash INTEGER NOT NULL,
  tokens TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, image BLOB NOT NULL,
  PRIMARY KEY (collection, document_id, page));
"""


class SqliteKBStore(SqlKBStore):
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def _execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._db.executemany(sql, rows)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _close(self) -> None:
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if kind is not None else "COMMIT")
