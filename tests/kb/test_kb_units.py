"""The knowledge base's parts that need no model: PDF rendering under budgets, segmentation, perceptual
hashes, BM25 and fusion, the SQLite store's deletion and generations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flashvl.errors import FlashvlError
from flashvl.kb.pdf import is_pdf, render_pdf
from flashvl.kb.search import Index, hamming, phash, tokenize
from flashvl.kb.sqlite_store import SqliteKBStore
from flashvl.kb.store import Document, Page

from .corpus import PDFS, pdf_bytes, screenshot


def test_pdf_pages_render_under_the_page_and_pixel_budgets() -> None:
    data = pdf_bytes(PDFS["handbook.pdf"])
    assert is_pdf(data) and not is_pdf(b"\x89PNG....")
    pages = render_pdf(data, max_pages=10, max_pixels=200_000)
    assert len(pages) == 3 and all(p.width * p.height <= 200_000 for p in pages)
    with pytest.raises(FlashvlError) as refused:
        render_pdf(data, max_pages=2, max_pixels=4_000_000)
    assert (refused.value.code, refused.value.status) == ("pdf_too_many_pages", 413)
    with pytest.raises(FlashvlError) as broken:
        render_pdf(b"%PDF-1.4 not really", max_pages=2, max_pixels=4_000_000)
    assert broken.value.code == "corrupt_pdf"


def test_tokenize_segments_chinese_and_drops_stopwords() -> None:
    assert tokenize("灭火器在哪里?") == ["灭火", "火器", "灭火器", "哪里"]  # search mode: words and sub-words
    assert tokenize("How do I connect to the VPN?") == ["connect", "vpn"]


def test_perceptual_hash_finds_near_duplicates_only() -> None:
    page = screenshot(["Printer troubleshooting", "Paper jam: open tray 2"])
    smaller = page.resize((page.width // 2, page.height // 2))
    other = screenshot(["年假申请规定", "超过五天需要部门总监批准"])
    assert hamming(phash(page), phash(smaller)) <= 4
    assert hamming(phash(page), phash(other)) > 10


def _page(document_id: str, text: str, vector: list[float]) -> Page:
    v = np.asarray(vector, dtype=np.float32)
    return Page(
        document_id,
        1,
        text,
        [{"text": text, "box": [0, 0, 1, 1]}],
        "",
        v / np.linalg.norm(v),
        0,
        tokenize(text),
        document=document_id,
    )


def test_bm25_and_vectors_are_fused() -> None:
    pages = [_page("a", "vpn server address", [1, 0]), _page("b", "printer toner", [0, 1])]
    index = Index(pages, 0)
    hits = index.search(tokenize("vpn"), np.array([0.0, 1.0], dtype=np.float32), top_k=2)
    # "a" wins BM25, "b" wins cosine: both appear, each once, with their parts reported
    assert {h.page.document_id for h in hits} == {"a", "b"}
    assert next(h for h in hits if h.page.document_id == "a").bm25 > 0
    snippet, highlights = hits[0].snippet(["vpn"]) if hits[0].page.document_id == "a" else hits[1].snippet(["vpn"])
    assert [snippet[s:e] for s, e in highlights] == ["vpn"]


def test_sqlite_store_deletes_every_derived_record(tmp_path: Path) -> None:
    store = SqliteKBStore(tmp_path / "kb.sqlite3")
    store.create_collection("c", "alice")
    before = store.generation("c")
    page = _page("", "hello world", [1, 0])
    page.image = b"png"
    store.add_document(Document("d1", "c", "a.png", "image", 1, "alice", 1.0), [page])
    assert store.generation("c") == before + 1
    assert [p.text for p in store.pages("c")] == ["hello world"] and store.page_image("c", "d1", 1) == b"png"
    assert store.delete_document("c", "d1") == 1
    assert store.pages("c") == [] and store.list_documents("c") == [] and store.page_image("c", "d1", 1) is None
    assert store.generation("c") == before + 2
    store.close()
