"""The server knowledge-base store: PostgreSQL (psycopg 3), for several flashvl instances sharing one index.

Same tables, queries (``flashvl/kb/sql_store.py``) and semantics as the SQLite store. Each instance keeps
its own in-memory search index per collection and reloads it when the collection's ``generation`` (bumped
in the same transaction as every change) moves, so a page one instance indexes is found by every other on
its next query.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Any

from flashvl.kb.sql_store import SqlKBStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS kb_collections (
  name TEXT PRIMARY KEY, owner TEXT NOT NULL, readers TEXT NOT NULL DEFAULT '[]',
  created_at DOUBLE PRECISION NOT NULL, generation BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS kb_documents (
  collection TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, pages INTEGER NOT NULL,
  principal TEXT NOT NULL, uploaded_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (collection, id));
CREATE TABLE IF NOT EXISTS kb_pages (
  collection TEXT NOT NULL, document_id TEXT NOT NULL, page INTEGER NOT NULL, text TEXT NOT NULL,
  lines TEXT NOT NULL, description TEXT NOT NULL, embedding BYTEA NOT NULL, phash BIGINT NOT NULL,
  tokens TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, image BYTEA NOT NULL,
  PRIMARY KEY (collection, document_id, page));
"""


class PostgresKBStore(SqlKBStore):
    def __init__(self, dsn: str) -> None:
        import psycopg

        self._conn = psycopg.connect(dsn, autocommit=True)
        self._lock = threading.Lock()
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(16016)")  # instances starting together
            self._conn.execute(SCHEMA)

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self._conn.execute(sql.replace("?", "%s"), params)

    def _execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    def _transaction(self) -> AbstractContextManager[Any]:
        return self._conn.transaction()

    def _close(self) -> None:
        self._conn.close()
