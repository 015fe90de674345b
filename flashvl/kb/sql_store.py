"""The knowledge-base queries both SQL backends share (SQLite embedded, PostgreSQL for several instances).

The queries are written once with ``?`` placeholders and upserts both databases speak
(``ON CONFLICT``); a backend supplies its connection, its schema's types, its placeholder and its
transaction. Every change bumps the collection's ``generation`` in the same transaction, which is how
each instance's in-memory search index knows to reload.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

from flashvl.kb.store import Collection, Document, Page, vector_from_bytes, vector_to_bytes

SEP = "\x1f"  # joins a page's tokens (never inside a token)
_DOCUMENT_COLUMNS = "id, collection, name, kind, pages, principal, uploaded_at"


def to_signed(value: int) -> int:
    """A 64-bit perceptual hash as the signed integer both databases store."""
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


class SqlKBStore:
    """``KBStore`` over a DB-API connection; subclasses implement the four primitives below."""

    _lock: threading.Lock

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """Run one statement (the caller holds ``_lock``); returns the cursor."""
        raise NotImplementedError

    def _execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._execute(sql, params).fetchall())

    # ------------------------------------------------------------ collections

    def create_collection(self, name: str, owner: str) -> Collection:
        with self._lock:
            self._execute(
                "INSERT INTO kb_collections (name, owner, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (name, owner, time.time()),
            )
        found = self.get_collection(name)
        assert found is not None
        return found

    def get_collection(self, name: str) -> Collection | None:
        rows = self._all("SELECT name, owner, readers, created_at FROM kb_collections WHERE name = ?", (name,))
        return Collection(rows[0][0], rows[0][1], json.loads(rows[0][2]), rows[0][3]) if rows else None

    def list_collections(self) -> list[Collection]:
        rows = self._all("SELECT name, owner, readers, created_at FROM kb_collections ORDER BY name")
        return [Collection(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def grant(self, name: str, reader: str) -> None:
        found = self.get_collection(name)
        if found is None or reader in found.readers:
            return
        with self._lock:
            self._execute(
                "UPDATE kb_collections SET readers = ? WHERE name = ?", (json.dumps([*found.readers, reader]), name)
            )

    def delete_collection(self, name: str) -> None:
        with self._lock, self._transaction():
            for table in ("kb_pages", "kb_documents"):
                self._execute(f"DELETE FROM {table} WHERE collection = ?", (name,))
            self._execute("DELETE FROM kb_collections WHERE name = ?", (name,))

    # ------------------------------------------------------------ documents and pages

    def has_document(self, collection: str, document_id: str) -> bool:
        return bool(self._all("SELECT 1 FROM kb_documents WHERE collection = ? AND id = ?", (collection, document_id)))

    def add_document(self, document: Document, pages: list[Page]) -> None:
        with self._lock, self._transaction():
            self._execute(
                f"INSERT INTO kb_documents ({_DOCUMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (collection, id) DO UPDATE "
                "SET name = EXCLUDED.name, pages = EXCLUDED.pages, uploaded_at = EXCLUDED.uploaded_at",
                (
                    document.id,
                    document.collection,
                    document.name,
                    document.kind,
                    document.pages,
                    document.principal,
                    document.uploaded_at,
                ),
            )
            self._execute(
                "DELETE FROM kb_pages WHERE collection = ? AND document_id = ?", (document.collection, document.id)
            )
            self._execute_many(
                "INSERT INTO kb_pages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            self._bump(document.collection)

    def _bump(self, collection: str) -> None:
        self._execute("UPDATE kb_collections SET generation = generation + 1 WHERE name = ?", (collection,))

    def delete_document(self, collection: str, document_id: str) -> int:
        with self._lock, self._transaction():
            removed = self._execute(
                "DELETE FROM kb_pages WHERE collection = ? AND document_id = ?", (collection, document_id)
            ).rowcount
            self._execute("DELETE FROM kb_documents WHERE collection = ? AND id = ?", (collection, document_id))
            self._bump(collection)
        return int(removed)

    def list_documents(self, collection: str) -> list[Document]:
        rows = self._all(
            f"SELECT {_DOCUMENT_COLUMNS} FROM kb_documents WHERE collection = ? ORDER BY uploaded_at, name",
            (collection,),
        )
        return [Document(*row) for row in rows]

    def pages(self, collection: str) -> list[Page]:
        rows = self._all(
            "SELECT p.document_id, p.page, p.text, p.lines, p.description, p.embedding, p.phash, p.tokens, "
            "p.width, p.height, d.name, d.uploaded_at FROM kb_pages p JOIN kb_documents d "
            "ON d.collection = p.collection AND d.id = p.document_id WHERE p.collection = ? "
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
            "SELECT image FROM kb_pages WHERE collection = ? AND document_id = ? AND page = ?",
            (collection, document_id, page),
        )
        return bytes(rows[0][0]) if rows else None

    def generation(self, collection: str) -> int:
        rows = self._all("SELECT generation FROM kb_collections WHERE name = ?", (collection,))
        return int(rows[0][0]) if rows else -1

    def close(self) -> None:
        with self._lock:
            self._close()
