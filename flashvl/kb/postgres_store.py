"""The server knowledge-base store: PostgreSQL (psycopg 3), for several flashvl instances sharing one index.

Same tables and semantics as the SQLite store. Each instance keeps its own in-memory search index per
collection and reloads it when the collection's ``generation`` (bumped in the same transaction as every
change) moves, so a page one instance indexes is found by every other on its next query.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from flashvl.kb.sqlite_store import SEP, to_signed, to_unsigned
from flashvl.kb.store import Collection, Document, Page, vector_from_bytes, vector_to_bytes

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


class PostgresKBStore:
    def __init__(self, dsn: str) -> None:
        import psycopg

        self._conn = psycopg.connect(dsn, autocommit=True)
        self._lock = threading.Lock()
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(16016)")  # instances starting together
            self._conn.execute(SCHEMA)

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def create_collection(self, name: str, owner: str) -> Collection:
        with self._lock:
            self._conn.execute(
                "INSERT INTO kb_collections (name, owner, created_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (name, owner, time.time()),
            )
        found = self.get_collection(name)
        assert found is not None
        return found

    def get_collection(self, name: str) -> Collection | None:
        rows = self._all("SELECT name, owner, readers, created_at FROM kb_collections WHERE name = %s", (name,))
        return Collection(rows[0][0], rows[0][1], json.loads(rows[0][2]), rows[0][3]) if rows else None

    def list_collections(self) -> list[Collection]:
        rows = self._all("SELECT name, owner, readers, created_at FROM kb_collections ORDER BY name")
        return [Collection(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def grant(self, name: str, reader: str) -> None:
        found = self.get_collection(name)
        if found is None or reader in found.readers:
            return
        with self._lock:
            self._conn.execute(
                "UPDATE kb_collections SET readers = %s WHERE name = %s", (json.dumps([*found.readers, reader]), name)
            )

    def delete_collection(self, name: str) -> None:
        with self._lock, self._conn.transaction():
            self._conn.execute("DELETE FROM kb_pages WHERE collection = %s", (name,))
            self._conn.execute("DELETE FROM kb_documents WHERE collection = %s", (name,))
            self._conn.execute("DELETE FROM kb_collections WHERE name = %s", (name,))

    def has_document(self, collection: str, document_id: str) -> bool:
        return bool(
            self._all("SELECT 1 FROM kb_documents WHERE collection = %s AND id = %s", (collection, document_id))
        )

    def add_document(self, document: Document, pages: list[Page]) -> None:
        with self._lock, self._conn.transaction():
            self._conn.execute(
                "INSERT INTO kb_documents VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (collection, id) DO UPDATE "
                "SET name = EXCLUDED.name, pages = EXCLUDED.pages, uploaded_at = EXCLUDED.uploaded_at",
                (
                    document.collection,
                    document.id,
                    document.name,
                    document.kind,
                    document.pages,
                    document.principal,
                    document.uploaded_at,
                ),
            )
            self._conn.execute(
                "DELETE FROM kb_pages WHERE collection = %s AND document_id = %s", (document.collection, document.id)
            )
            with self._conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO kb_pages VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (
                            document.collection,
                            document.id,
                            page.page,
                            page.text,
                            json.dumps(page.lines, ensure_ascii=False),
                            page.description,
                            vector_to_bytes(page.embedding),
                            to_signed(page.phash),
                            SEP.join(page.tokens),
                            page.width,
                            page.height,
                            page.image,
                        )
                        for page in pages
                    ],
                )
            self._conn.execute(
                "UPDATE kb_collections SET generation = generation + 1 WHERE name = %s", (document.collection,)
            )

    def delete_document(self, collection: str, document_id: str) -> int:
        with self._lock, self._conn.transaction():
            removed = self._conn.execute(
                "DELETE FROM kb_pages WHERE collection = %s AND document_id = %s", (collection, document_id)
            ).rowcount
            self._conn.execute("DELETE FROM kb_documents WHERE collection = %s AND id = %s", (collection, document_id))
            self._conn.execute("UPDATE kb_collections SET generation = generation + 1 WHERE name = %s", (collection,))
        return int(removed)

    def list_documents(self, collection: str) -> list[Document]:
        rows = self._all(
            "SELECT id, collection, name, kind, pages, principal, uploaded_at FROM kb_documents "
            "WHERE collection = %s ORDER BY uploaded_at, name",
            (collection,),
        )
        return [Document(*row) for row in rows]

    def pages(self, collection: str) -> list[Page]:
        rows = self._all(
            "SELECT p.document_id, p.page, p.text, p.lines, p.description, p.embedding, p.phash, p.tokens, "
            "p.width, p.height, d.name, d.uploaded_at FROM kb_pages p JOIN kb_documents d "
            "ON d.collection = p.collection AND d.id = p.document_id WHERE p.collection = %s "
            "ORDER BY d.uploaded_at, p.document_id, p.page",
            (collection,),
        )
        return [
            Page(
                document_id=r[0],
                page=r[1],
                text=r[2],
                lines=json.loads(r[3]),
                description=r[4],
                embedding=vector_from_bytes(bytes(r[5])),
                phash=to_unsigned(r[6]),
                tokens=r[7].split(SEP) if r[7] else [],
                width=r[8],
                height=r[9],
                document=r[10],
                uploaded_at=r[11],
            )
            for r in rows
        ]

    def page_image(self, collection: str, document_id: str, page: int) -> bytes | None:
        rows = self._all(
            "SELECT image FROM kb_pages WHERE collection = %s AND document_id = %s AND page = %s",
            (collection, document_id, page),
        )
        return bytes(rows[0][0]) if rows else None

    def generation(self, collection: str) -> int:
        rows = self._all("SELECT generation FROM kb_collections WHERE name = %s", (collection,))
        return int(rows[0][0]) if rows else -1

    def close(self) -> None:
        with self._lock:
            self._conn.close()
