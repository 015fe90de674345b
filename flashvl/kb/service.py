"""The knowledge base: indexing images and PDFs, hybrid search, and answers grounded in the retrieved pages.

Every page goes through the runtime's guarded vision stage (OCR via ``tasks.document.read_image`` and a
caption for the description), the runtime's shared e5 ``Embedder`` and the configured ``KBStore``.
Collections are owned by the principal who created them; others read one only when granted (admin reads
and writes all). The API and the CLI decide who the principal is; this module only checks names.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.kb.pdf import is_pdf, render_pdf
from flashvl.kb.search import Index, phash, tokenize
from flashvl.kb.store import Collection, Document, KBStore, Page
from flashvl.media.decode import decode_image
from flashvl.media.types import LoadedImage
from flashvl.pipeline.embedding import Embedder
from flashvl.pipeline.guarded import GuardedLanguage, GuardedVision
from flashvl.stages.base import ChatMessage, ChatRequest, VisionRequest
from flashvl.tasks.document import lines_from_observations, read_document, read_image
from flashvl.text.language import detect_language

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
EMBED_CHARS = 1500  # e5-small reads 512 tokens; the head of the page is what it sees
THUMB_SIDE = 1600  # the stored page image (shown for a hit) is at most this many px on a side
DECLINE = {
    "zh": "知识库中没有找到与这个问题相关的内容,无法据此回答。",
    "en": "The knowledge base has nothing relevant to this question, so I cannot answer it from it.",
}
GROUNDED_SYSTEM = {
    "en": (
        "You answer questions only from the numbered knowledge-base pages below (text read by OCR from "
        "screenshots and PDF pages). Never use your own knowledge. If the pages do not contain the answer, set "
        '"answerable" to false. Otherwise answer briefly in English and list in "sources" the numbers of the '
        "pages you used."
    ),
    "zh": (
        "你只能根据下面编号的知识库页面(截图和PDF页面经OCR识别的文字)回答问题,不得使用你自己的知识。"
        '如果这些页面里没有答案,把 "answerable" 设为 false。否则用中文简要回答,并在 "sources" 中列出你用到的页面编号。'
    ),
}
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "answerable": {"type": "boolean"},
        "answer": {"type": "string", "maxLength": 600},
        "sources": {"type": "array", "items": {"type": "integer"}, "maxItems": 5},
    },
    "required": ["answerable", "answer", "sources"],
}


@dataclass
class Who:
    """The caller, as far as the knowledge base cares: a name and whether it is an admin."""

    name: str
    admin: bool = False


class KnowledgeBase:
    def __init__(
        self,
        store: KBStore,
        settings: Settings,
        *,
        vision: GuardedVision,
        language: GuardedLanguage | None,
        embedder: Embedder,
    ) -> None:
        self.store = store
        self.settings = settings
        self.vision = vision
        self.language = language
        self.embedder = embedder
        self._indexes: dict[str, Index] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------ access

    async def collection(self, name: str, who: Who, *, write: bool = False, create: bool = False) -> Collection:
        """The collection if ``who`` may use it (404 when it may not even know it exists)."""
        if not NAME.match(name):
            raise FlashvlError("invalid_collection", "A collection name is 1-64 letters, digits, '_', '-' or '.'.", 400)
        found = await asyncio.to_thread(self.store.get_collection, name)
        if found is None and create:
            found = await asyncio.to_thread(self.store.create_collection, name, who.name)
        if found is None or not (who.admin or found.owner == who.name or (not write and who.name in found.readers)):
            raise FlashvlError("collection_not_found", f"No collection {name!r} that you may use.", 404)
        return found

    async def collections(self, who: Who) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(self.store.list_collections)
        return [
            {"name": c.name, "owner": c.owner, "readers": c.readers if (who.admin or c.owner == who.name) else []}
            for c in found
            if who.admin or c.owner == who.name or who.name in c.readers
        ]

    async def grant(self, name: str, reader: str, who: Who) -> None:
        await self.collection(name, who, write=True)
        await asyncio.to_thread(self.store.grant, name, reader)

    async def documents(self, name: str, who: Who) -> list[dict[str, Any]]:
        await self.collection(name, who)
        found = await asyncio.to_thread(self.store.list_documents, name)
        return [d.__dict__ for d in found]

    async def delete_document(self, name: str, document_id: str, who: Who) -> int:
        await self.collection(name, who, write=True)
        removed = await asyncio.to_thread(self.store.delete_document, name, document_id)
        self._indexes.pop(name, None)
        return removed

    async def page_image(self, name: str, document_id: str, page: int, who: Who) -> bytes:
        await self.collection(name, who)
        image = await asyncio.to_thread(self.store.page_image, name, document_id, page)
        if image is None:
            raise FlashvlError("page_not_found", "No such page in this collection.", 404)
        return image

    # ------------------------------------------------------------ indexing

    async def add(self, name: str, file_name: str, data: bytes, who: Who) -> dict[str, Any]:
        """Index one image or PDF; idempotent by the sha256 of its bytes (a known file is skipped)."""
        await self.collection(name, who, write=True, create=True)
        if not data:
            raise FlashvlError("empty_image", "The file is 0 bytes.", 400)
        if len(data) > self.settings.kb_max_file_bytes:
            raise FlashvlError(
                "file_too_large",
                f"The file is {len(data)} bytes; the limit is {self.settings.kb_max_file_bytes} (kb_max_file_bytes).",
                413,
            )
        digest = hashlib.sha256(data).hexdigest()
        if await asyncio.to_thread(self.store.has_document, name, digest):
            return {"document_id": digest, "document": file_name, "status": "skipped", "pages": 0}
        began = time.perf_counter()
        pdf = is_pdf(data)
        if pdf:
            rendered = await asyncio.to_thread(
                render_pdf,
                data,
                max_pages=self.settings.kb_pdf_max_pages,
                max_pixels=self.settings.kb_pdf_max_pixels,
            )
            images = [await asyncio.to_thread(_reload, picture, self.settings) for picture in rendered]
        else:
            images = [await asyncio.to_thread(decode_image, data, self.settings, "upload")]
        pages = [await self._page(image, number, file_name) for number, image in enumerate(images, start=1)]
        document = Document(digest, name, file_name, "pdf" if pdf else "image", len(pages), who.name, time.time())
        await asyncio.to_thread(self.store.add_document, document, pages)
        self._indexes.pop(name, None)
        return {
            "document_id": digest,
            "document": file_name,
            "status": "indexed",
            "pages": len(pages),
            "seconds": round(time.perf_counter() - began, 3),
        }

    async def _page(self, image: LoadedImage, number: int, file_name: str) -> Page:
        description = ""
        document: dict[str, Any] = {}
        if self.settings.kb_describe:
            # One call: the caption's observations carry the OCR lines it read (no second OCR pass).
            seen = await self.vision.see(VisionRequest([image], task="caption"))
            description = seen.result.answer or seen.result.description
            lines = lines_from_observations(seen.result.observations)
            if lines:
                document = read_document(lines, tables=True)
        if not document:  # no description wanted, or the caption's text gate saw no text: OCR it outright
            document, _ = await read_image(self.vision, image, tables=True)
        text = document["text"]
        for table in document.get("tables") or []:
            text += "\n" + table["markdown"]
        body = f"{text}\n{description}".strip()
        vector = (await asyncio.to_thread(self.embedder.passages, [body[:EMBED_CHARS] or file_name]))[0]
        tokens = await asyncio.to_thread(tokenize, f"{file_name}\n{body}")
        picture = image.image
        return Page(
            document_id="",
            page=number,
            text=document["text"],
            lines=document["lines"],
            description=description,
            embedding=_unit(vector),
            phash=phash(picture),
            tokens=tokens,
            width=image.width,
            height=image.height,
            image=await asyncio.to_thread(_thumbnail, picture),
        )

    # ------------------------------------------------------------ search

    async def _index(self, name: str) -> Index:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            generation = await asyncio.to_thread(self.store.generation, name)
            index = self._indexes.get(name)
            if index is None or index.generation != generation:
                pages = await asyncio.to_thread(self.store.pages, name)
                index = await asyncio.to_thread(Index, pages, generation)
                self._indexes[name] = index
            return index

    async def search(
        self,
        name: str,
        who: Who,
        *,
        query: str | None = None,
        image: LoadedImage | None = None,
        top_k: int = 5,
        documents: list[str] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[str, Any]:
        """Hits for a text query, an image (near-duplicates by perceptual hash, then its OCR text and
        description), or both; filtered by document name/id and upload time."""
        await self.collection(name, who)
        began = time.perf_counter()
        text = query or ""
        image_hash = None
        if image is not None:
            document, _ = await read_image(self.vision, image, tables=False)
            text = f"{text}\n{document['text']}".strip()
            image_hash = phash(image.image)
        if not text and image_hash is None:
            raise FlashvlError("empty_query", "Send a query, an image, or both.", 400)
        index = await self._index(name)
        terms = await asyncio.to_thread(tokenize, text) if text else []
        vector = _unit((await asyncio.to_thread(self.embedder, [text[:EMBED_CHARS]]))[0]) if text else None
        hits = index.search(
            terms,
            vector,
            top_k=top_k,
            allowed=index.filter(documents, since, until),
            image_hash=image_hash,
        )
        return {
            "collection": name,
            "query": text,
            "results": [hit.to_dict(terms) for hit in hits],
            "pages_searched": len(index.pages),
            "seconds": round(time.perf_counter() - began, 4),
        }

    # ------------------------------------------------------------ grounded answers

    async def answer(
        self,
        name: str,
        who: Who,
        question: str,
        *,
        top_k: int = 4,
        image: LoadedImage | None = None,
        max_tokens: int = 256,
    ) -> dict[str, Any]:
        """An answer from the collection's pages only, citing them; declined when nothing relevant is found
        (no call to the language model) or when the language model finds no answer in the pages."""
        language = detect_language(question)
        found = await self.search(name, who, query=question, image=image, top_k=top_k)
        hits = found["results"]
        stages: list[dict[str, Any]] = [{"name": "retrieval", "backend": "kb", "seconds": found["seconds"]}]
        relevant = [h for h in hits if h["bm25"] > 0 and h["cosine"] >= self.settings.kb_min_similarity]
        out: dict[str, Any] = {"answered": False, "text": DECLINE[language], "sources": [], "stages": stages}
        if not relevant:
            return out | {"notice": "no relevant page in the knowledge base"}
        if self.language is None:  # no language stage: the best page's snippet, cited
            top = relevant[0]
            return out | {"answered": True, "text": top["snippet"], "sources": [_source(top)], "notice": "extract"}
        context = "\n\n".join(
            f"[{n}] {h['document']} p.{h['page']}:\n{_page_text(h)[: self.settings.kb_context_chars]}"
            for n, h in enumerate(relevant, start=1)
        )
        request = ChatRequest(
            [
                ChatMessage("system", GROUNDED_SYSTEM[language]),
                ChatMessage("user", f"Pages:\n{context}\n\nQuestion: {question}"),
            ],
            max_tokens=max_tokens,
            temperature=0.0,
            json_schema=ANSWER_SCHEMA,
            seed=0,
        )
        generation = await self.language.generate(request)
        stages.append(
            {"name": "language", "backend": self.language.name, "seconds": round(generation.timings.total, 4)}
        )
        try:
            parsed = json.loads(generation.text)
        except json.JSONDecodeError:
            parsed = {"answerable": False}
        cited = [relevant[i - 1] for i in parsed.get("sources") or [] if isinstance(i, int) and 1 <= i <= len(relevant)]
        if not parsed.get("answerable") or not str(parsed.get("answer", "")).strip():
            return out | {
                "notice": "the retrieved pages do not answer the question",
                "confidence": generation.confidence,
            }
        return out | {
            "answered": True,
            "text": str(parsed["answer"]).strip(),
            "sources": [_source(h) for h in (cited or relevant[:1])],
            "confidence": generation.confidence,
            "usage": {
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": generation.completion_tokens,
                "total_tokens": generation.prompt_tokens + generation.completion_tokens,
            },
            "finish_reason": generation.finish_reason,
        }

    async def close(self) -> None:
        await asyncio.to_thread(self.store.close)


def _page_text(hit: dict[str, Any]) -> str:
    return "\n".join(line["text"] for line in hit["lines"])


def _source(hit: dict[str, Any]) -> dict[str, Any]:
    return {key: hit[key] for key in ("document", "document_id", "page", "snippet", "score")}


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _reload(picture: Image.Image, settings: Settings) -> LoadedImage:
    """A rendered PDF page through the same decoder (and limits) as any uploaded image."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return decode_image(buffer.getvalue(), settings, "upload")


def _thumbnail(picture: Image.Image) -> bytes:
    copy = picture.copy()
    copy.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buffer = io.BytesIO()
    copy.convert("RGB").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def build_store(settings: Settings) -> KBStore:
    """The store the settings name: ``sqlite`` (embedded, default) or ``postgres``."""
    if settings.kb_store == "postgres":
        if not settings.kb_postgres_dsn:
            raise ValueError("kb_store postgres needs kb_postgres_dsn (postgresql://user@host:port/db)")
        from flashvl.kb.postgres_store import PostgresKBStore

        return PostgresKBStore(settings.kb_postgres_dsn)
    from flashvl.kb.sqlite_store import SqliteKBStore

    return SqliteKBStore(settings.kb_sqlite_path)
