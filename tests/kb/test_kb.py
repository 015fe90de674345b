"""The knowledge base with the real OCR (PP-OCR via rapidocr), the real e5 embedder, the real language model
and real storage: the embedded SQLite store, and a real PostgreSQL server started here.

Indexes our own rendered screenshots and PDFs (zh and en, ``corpus.py``) once, then measures recall@1 and
recall@5 of text and image queries, checks that grounded answers cite the right page and that a question
the pages do not answer is declined, and checks idempotence, deletion and ownership."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.kb.postgres_store import PostgresKBStore
from flashvl.kb.service import KnowledgeBase, Who
from flashvl.media import decode_image
from flashvl.runtime import Runtime

from .corpus import SCREENSHOTS, TEXT_QUERIES, image_queries, png_bytes, screenshot, write_corpus
from .postgres import postgres_server

pytestmark = pytest.mark.slow
T = TypeVar("T")
ALICE, BOB, ADMIN = Who("key:alice"), Who("key:bob"), Who("key:root", admin=True)


class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __call__(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)


@pytest.fixture(scope="module")
def run() -> Iterator[Loop]:
    loop = Loop()
    yield loop
    loop.loop.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("kb") / "corpus")


@pytest.fixture(scope="module")
def runtime(run: Loop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    folder = tmp_path_factory.mktemp("kbstore")
    # a generous language deadline: CI's 2 cores are shared with other test processes
    settings = Settings(
        kb_sqlite_path=folder / "kb.sqlite3", review_store="memory", arbitration=False, language_timeout_s=400
    )
    rt = Runtime(settings, roles={"vision", "language"})
    run(rt.start())
    yield rt
    run(rt.close())


@pytest.fixture(scope="module")
def indexed(run: Loop, runtime: Runtime, corpus: list[Path]) -> KnowledgeBase:
    for path in corpus:
        result = run(runtime.kb.add("docs", path.name, path.read_bytes(), ALICE))
        assert result["status"] == "indexed", result
    return runtime.kb


def recall(ranked: list[list[tuple[str, int]]], wanted: list[tuple[str, int]]) -> tuple[float, float]:
    at1 = sum(r[:1] == [w] for r, w in zip(ranked, wanted, strict=True)) / len(wanted)
    at5 = sum(w in r[:5] for r, w in zip(ranked, wanted, strict=True)) / len(wanted)
    return at1, at5


def test_recall_of_text_and_image_queries(run: Loop, indexed: KnowledgeBase, runtime: Runtime) -> None:
    pages = run(indexed.search("docs", ALICE, query="handbook", top_k=50))["pages_searched"]
    assert pages == len(SCREENSHOTS) + 3 + 2  # every screenshot, and each PDF page on its own
    ranked = []
    for query, _, _ in TEXT_QUERIES:
        hits = run(indexed.search("docs", ALICE, query=query, top_k=5))["results"]
        ranked.append([(h["document"], h["page"]) for h in hits])
    text_at1, text_at5 = recall(ranked, [(d, p) for _, d, p in TEXT_QUERIES])
    image_ranked, image_wanted = [], []
    for picture, document, page in image_queries():
        loaded = decode_image(png_bytes(picture), runtime.settings, "upload")
        hits = run(indexed.search("docs", ALICE, image=loaded, top_k=5))["results"]
        image_ranked.append([(h["document"], h["page"]) for h in hits])
        image_wanted.append((document, page))
    image_at1, image_at5 = recall(image_ranked, image_wanted)
    print(
        f"\nrecall over {pages} pages: text ({len(ranked)} queries) @1 {text_at1:.3f} @5 {text_at5:.3f}; "
        f"image ({len(image_ranked)} queries) @1 {image_at1:.3f} @5 {image_at5:.3f}"
    )
    assert text_at1 >= 0.9 and text_at5 == 1.0
    assert image_at1 >= 0.85 and image_at5 == 1.0


def test_hits_carry_snippet_highlights_and_lines(run: Loop, indexed: KnowledgeBase) -> None:
    hit = run(indexed.search("docs", ALICE, query="灭火器", top_k=1))["results"][0]
    assert (hit["document"], hit["page"]) == ("办公手册.pdf", 2)
    start, end = hit["highlights"][0]
    assert hit["snippet"][start:end] == "灭火器"
    assert [hit["lines"][i]["text"] for i in hit["matched_lines"]] == ["灭火器位于每层电梯旁边"]
    only = run(indexed.search("docs", ALICE, query="password", documents=["vpn_setup.png"], top_k=5))["results"]
    assert {h["document"] for h in only} == {"vpn_setup.png"}
    assert run(indexed.search("docs", ALICE, query="password", since=4102444800.0))["results"] == []


def test_grounded_answers_cite_the_right_page(run: Loop, indexed: KnowledgeBase) -> None:
    answer = run(indexed.answer("docs", ALICE, "How often do I have to change my password?", max_tokens=96))
    assert answer["answered"], answer
    assert "90" in answer["text"]
    assert ("handbook.pdf", 2) in [(s["document"], s["page"]) for s in answer["sources"]]
    answer = run(indexed.answer("docs", ALICE, "灭火器放在哪里?", max_tokens=96))
    assert answer["answered"], answer
    assert "电梯" in answer["text"]
    assert ("办公手册.pdf", 2) in [(s["document"], s["page"]) for s in answer["sources"]]


def test_an_unanswerable_question_is_declined(run: Loop, indexed: KnowledgeBase) -> None:
    for question in ("What is the capital of Australia?", "2018年世界杯冠军是哪个国家?"):
        answer = run(indexed.answer("docs", ALICE, question))
        assert not answer["answered"] and answer["sources"] == [], answer
        assert "knowledge base" in answer["text"] or "知识库" in answer["text"]


def test_idempotent_by_content_and_delete_removes_everything(run: Loop, indexed: KnowledgeBase) -> None:
    data = png_bytes(screenshot(["Parking rules", "Visitors park on level B2"]))
    first = run(indexed.add("scratch", "parking.png", data, ALICE))
    again = run(indexed.add("scratch", "parking-copy.png", data, ALICE))
    assert first["status"] == "indexed" and again["status"] == "skipped"
    assert [d["name"] for d in run(indexed.documents("scratch", ALICE))] == ["parking.png"]
    assert run(indexed.search("scratch", ALICE, query="where do visitors park"))["results"]
    assert run(indexed.delete_document("scratch", first["document_id"], ALICE)) == 1
    assert run(indexed.search("scratch", ALICE, query="where do visitors park"))["results"] == []
    assert indexed.store.page_image("scratch", first["document_id"], 1) is None
    assert indexed.store.pages("scratch") == [] and indexed.store.list_documents("scratch") == []


def test_collections_belong_to_their_owner(run: Loop, indexed: KnowledgeBase) -> None:
    with pytest.raises(FlashvlError) as refused:
        run(indexed.search("docs", BOB, query="VPN"))
    assert refused.value.status == 404
    assert [c["name"] for c in run(indexed.collections(BOB))] == []
    run(indexed.grant("docs", BOB.name, ALICE))
    assert run(indexed.search("docs", BOB, query="VPN"))["results"]
    with pytest.raises(FlashvlError):  # read, not write
        run(indexed.add("docs", "x.png", png_bytes(screenshot(["x"])), BOB))
    assert "docs" in [c["name"] for c in run(indexed.collections(ADMIN))]


def test_postgres_store_shared_by_two_instances(run: Loop, runtime: Runtime, corpus: list[Path]) -> None:
    """The server backend against a real PostgreSQL: what one flashvl instance indexes, another finds."""
    settings = runtime.settings.model_copy(update={"kb_describe": False})
    with postgres_server() as dsn:
        kbs = [
            KnowledgeBase(
                PostgresKBStore(dsn), settings, vision=runtime.vision, language=None, embedder=runtime.embedder
            )
            for _ in range(2)
        ]
        try:
            first, second = kbs
            for name in ("handbook.pdf", "printer_help.png", "邮箱配置.png"):
                data = next(p for p in corpus if p.name == name).read_bytes()
                assert run(first.add("team", name, data, ALICE))["status"] == "indexed"
            assert (
                run(second.add("team", "handbook.pdf", (corpus[0].parent / "handbook.pdf").read_bytes(), ALICE))[
                    "status"
                ]
                == "skipped"
            )
            for query, document, page in [
                ("how long are customer records kept", "handbook.pdf", 3),
                ("which toner part to order", "printer_help.png", 1),
                ("邮箱发件服务器端口是多少", "邮箱配置.png", 1),
            ]:
                top = run(second.search("team", ALICE, query=query, top_k=1))["results"][0]
                assert (top["document"], top["page"]) == (document, page)
            printer = next(d for d in run(second.documents("team", ALICE)) if d["name"] == "printer_help.png")
            assert run(second.delete_document("team", printer["id"], ALICE)) == 1
            hits = run(first.search("team", ALICE, query="which toner part to order", top_k=5))["results"]
            assert "printer_help.png" not in [h["document"] for h in hits]  # the other instance sees it at once
            with pytest.raises(FlashvlError):
                run(second.search("team", BOB, query="toner"))
            image = first.store.page_image("team", next(iter(d["id"] for d in run(first.documents("team", ALICE)))), 1)
            assert image is not None and image[:8] == b"\x89PNG\r\n\x1a\n"
            assert io.BytesIO(image).getbuffer().nbytes > 0
        finally:
            for kb in kbs:
                run(kb.close())
