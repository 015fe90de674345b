"""The knowledge base's storage interface: collections owned by principals, documents, pages.

A page is one image (an uploaded screenshot, or one rendered page of a PDF) with everything derived
from it: OCR lines in reading order and the text, the vision stage's description, the text embedding,
a perceptual hash and its tokens for BM25. Two backends implement ``KBStore``:
``flashvl/kb/sqlite_store.py`` (embedded, the default) and ``flashvl/kb/postgres_store.py`` (a
PostgreSQL server several flashvl instances share). Search itself runs in the process over the
collection's pages (``flashvl/kb/search.py``), refreshed when the collection's ``generation`` changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class Collection:
    name: str
    owner: str
    readers: list[str] = field(default_factory=list)  # principals granted read access
    created_at: float = 0.0


@dataclass
class Document:
    id: str  # the sha256 of the file's bytes: indexing is idempotent by content
    collection: str
    name: str  # the file name (or URL) it came from
    kind: str  # "image" | "pdf"
    pages: int
    principal: str
    uploaded_at: float


@dataclass
class Page:
    document_id: str
    page: int  # 1-based
    text: str
    lines: list[dict[str, Any]]
    description: str
    embedding: np.ndarray  # float32, unit length
    phash: int  # 64-bit perceptual hash (DCT)
    tokens: list[str]
    width: int = 0
    height: int = 0
    image: bytes = b""  # a PNG of the page (downscaled), so a hit can be shown
    document: str = ""  # filled by the store: the document's file name
    uploaded_at: float = 0.0


class KBStore(Protocol):
    """Everything the knowledge base keeps; every call is synchronous (run it in a thread)."""

    def create_collection(self, name: str, owner: str) -> Collection: ...

    def get_collection(self, name: str) -> Collection | None: ...

    def list_collections(self) -> list[Collection]: ...

    def grant(self, name: str, reader: str) -> None: ...

    def delete_collection(self, name: str) -> None: ...

    def has_document(self, collection: str, document_id: str) -> bool: ...

    def add_document(self, document: Document, pages: list[Page]) -> None: ...

    def delete_document(self, collection: str, document_id: str) -> int:
        """Remove the document and every page derived from it; returns the pages removed."""
        ...

    def list_documents(self, collection: str) -> list[Document]: ...

    def pages(self, collection: str) -> list[Page]:
        """Every page of the collection without its image bytes (what search needs)."""
        ...

    def page_image(self, collection: str, document_id: str, page: int) -> bytes | None: ...

    def generation(self, collection: str) -> int:
        """A number that changes whenever the collection's pages change (for search caches)."""
        ...

    def close(self) -> None: ...


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def vector_from_bytes(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)
