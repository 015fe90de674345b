"""The embedded knowledge-base store: one SQLite file (WAL), nothing to install.

Vectors are float32 blobs; search loads a collection's vectors once into one numpy matrix (refreshed
when the collection's ``generation`` changes) and scores them brute force: 10k pages x 384 dims is a
15 MB matrix and one matrix-vector product of a few milliseconds (see ``bench/kb_bench.py``), which needs no
vector-index extension.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from flashvl.kb.store import Collection, Document, Page, vector_from_bytes, vector_to_bytes

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
SEP = "\x1f"  # joins a page's tokens (never inside a token)


def to_signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


class SqliteKBStore:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    # ------------------------------------------------------------ collections

    def create_collection(self, name: str, owner: str) -> Collection:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO kb_collections (name, owner, created_at) VALUES (?, ?, ?)",
                (name, owner, time.time()),
            )
        found = self.get_collection(name)
        assert found is not None
        return found

    def get_collection(self, name: str) -> Collection | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, owner, readers, created_at FROM kb_collections WHERE name = ?", (name,)
            ).fetchone()
        return Collection(row[0], row[1], json.loads(row[2]), row[3]) if row else None

    def list_collections(self) -> list[Collection]:
        with self._lock:
            rows = self._db.execute("SELECT name, owner, readers, created_at FROM kb_collections ORDER BY name")
            return [Collection(r[0], r[1], json.loads(r[2]), r[3]) for r in rows.fetchall()]

    def grant(self, name: str, reader: str) -> None:
        found = self.get_collection(name)
        if found is None or reader in found.readers:
            return
        with self._lock:
            self._db.execute(
                "UPDATE kb_collections SET readers = ? WHERE name = ?", (json.dumps([*found.readers, reader]), name)
            )

    def delete_collection(self, name: str) -> None:
        with self._lock, self._transaction():
            for table in ("kb_pages", "kb_documents"):
                self._db.execute(f"DELETE FROM {table} WHERE collection = ?", (name,))
            self._db.execute("DELETE FROM kb_collections WHERE name = ?", (name,))

    # ------------------------------------------------------------ documents and pages

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def has_document(self, collection: str, document_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM kb_documents WHERE collection = ? AND id = ?", (collection, document_id)
            ).fetchone()
        return row is not None

    def add_document(self, document: Document, pages: list[Page]) -> None:
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO kb_documents VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            self._db.execute(
                "DELETE FROM kb_pages WHERE collection = ? AND document_id = ?", (document.collection, document.id)
            )
            self._db.executemany(
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
        self._db.execute("UPDATE kb_collections SET generation = generation + 1 WHERE name = ?", (collection,))

    def delete_document(self, collection: str, document_id: str) -> int:
        with self._lock, self._transaction():
            removed = self._db.execute(
                "DELETE FROM kb_pages WHERE collection = ? AND document_id = ?", (collection, document_id)
            ).rowcount
            self._db.execute("DELETE FROM kb_documents WHERE collection = ? AND id = ?", (collection, document_id))
            self._bump(collection)
        return int(removed)

    def list_documents(self, collection: str) -> list[Document]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, collection, name, kind, pages, principal, uploaded_at FROM kb_documents "
                "WHERE collection = ? ORDER BY uploaded_at, name",
                (collection,),
            ).fetchall()
        return [Document(*row) for row in rows]

    def pages(self, collection: str) -> list[Page]:
        with self._lock:
            rows = self._db.execute(
                "SELECT p.document_id, p.page, p.text, p.lines, p.description, p.embedding, p.phash, p.tokens, "
                "p.width, p.height, d.name, d.uploaded_at FROM kb_pages p JOIN kb_documents d "
                "ON d.collection = p.collection AND d.id = p.document_id WHERE p.collection = ? "
                "ORDER BY d.uploaded_at, p.document_id, p.page",
                (collection,),
            ).fetchall()
        return [
            Page(
                document_id=r[0],
                page=r[1],
                text=r[2],
                lines=json.loads(r[3]),
                description=r[4],
                embedding=vector_from_bytes(r[5]),
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
        with self._lock:
            row = self._db.execute(
                "SELECT image FROM kb_pages WHERE collection = ? AND document_id = ? AND page = ?",
                (collection, document_id, page),
            ).fetchone()
        return bytes(row[0]) if row else None

    def generation(self, collection: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT generation FROM kb_collections WHERE name = ?", (collection,)).fetchone()
        return int(row[0]) if row else -1

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if kind is not None else "COMMIT")
