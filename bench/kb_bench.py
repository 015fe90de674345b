"""Knowledge base: indexing pages/s and query latency (p50/p99) at 1k and 10k pages, the embedded SQLite
store and the PostgreSQL server store, in one run.

    .venv/bin/python bench/kb_bench.py                 # writes bench/results/kb.{json,md,png}
    .venv/bin/python bench/kb_bench.py --sizes 1000 --queries 50

Indexing is the real path (rendered zh/en screenshots and PDF pages through the offline vision stage's
OCR and caption, the e5 embedder, the store): pages/s, and its parts. Query latency is measured over
collections filled with synthetic pages (zh/en text drawn from the corpus' vocabulary, random unit
vectors: scoring cost does not depend on the values), each query the real path: jieba + BM25 over the
inverted index, the e5 query embedding, the matrix-vector product, fusion and snippets. "cold" is the
first query after a change: the collection's pages re-read from the store into the in-process index
(what every instance pays once after another instance writes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from kb.corpus import PDFS, SCREENSHOTS, TEXT_QUERIES, write_corpus  # noqa: E402
from kb.postgres import postgres_server  # noqa: E402

from flashvl.config import Settings  # noqa: E402
from flashvl.kb.search import phash, tokenize  # noqa: E402
from flashvl.kb.service import KnowledgeBase, Who  # noqa: E402
from flashvl.kb.store import Document, KBStore, Page  # noqa: E402
from flashvl.runtime import Runtime  # noqa: E402

WHO = Who("bench")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def synthetic_pages(count: int, seed: int = 0) -> list[tuple[Document, list[Page]]]:
    rng = random.Random(seed)
    vocabulary = [t for lines in SCREENSHOTS.values() for line in lines for t in tokenize(line, keep_stopwords=True)]
    vocabulary += [t for pages in PDFS.values() for lines in pages for line in lines for t in tokenize(line)]
    vectors = np.random.default_rng(seed).standard_normal((count, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    from PIL import Image

    blank = phash(Image.new("RGB", (64, 64), "white"))
    out = []
    for i in range(count):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(20, 60))]
        text = " ".join(words)
        lines = [{"text": text[j : j + 40], "box": [0, j, 100, j + 10], "confidence": 1.0, "row": j} for j in (0, 40)]
        page = Page("", 1, text, lines, "", vectors[i], blank ^ i, words, 800, 600, b"")
        document = Document(f"doc{i:06d}", "bench", f"page{i:06d}.png", "image", 1, WHO.name, time.time())
        out.append((document, [page]))
    return out


async def index_real(runtime: Runtime, folder: Path) -> dict[str, float]:
    paths = write_corpus(folder / "corpus")
    kb = runtime.kb
    began = time.perf_counter()
    pages = 0
    for path in paths:
        pages += (await kb.add("real", path.name, path.read_bytes(), WHO))["pages"]
    seconds = time.perf_counter() - began
    return {"pages": pages, "seconds": round(seconds, 2), "pages_per_s": round(pages / seconds, 3)}


async def query_latency(
    kb: KnowledgeBase, store: KBStore, size: int, queries: int, rng: random.Random
) -> dict[str, float]:
    began = time.perf_counter()
    for document, pages in synthetic_pages(size):
        store.add_document(document, pages)
    fill = time.perf_counter() - began
    texts = [q for q, _, _ in TEXT_QUERIES]
    began = time.perf_counter()
    await kb.search("bench", WHO, query=texts[0], top_k=5)  # loads the index
    cold = time.perf_counter() - began
    times = []
    for _ in range(queries):
        query = rng.choice(texts)
        began = time.perf_counter()
        await kb.search("bench", WHO, query=query, top_k=5)
        times.append(time.perf_counter() - began)
    return {
        "pages": size,
        "insert_pages_per_s": round(size / fill, 1),
        "cold_ms": round(cold * 1000, 1),
        "p50_ms": round(percentile(times, 50) * 1000, 2),
        "p99_ms": round(percentile(times, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(times) * 1000, 2),
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="flashvl-kb-bench-"))
    settings = Settings(kb_sqlite_path=folder / "kb.sqlite3", language="none", review_store="memory")
    results: dict[str, object] = {"load_1min_before": os.getloadavg()[0], "cpus": os.cpu_count()}
    async with Runtime(settings, roles={"vision"}) as runtime:
        results["indexing"] = await index_real(runtime, folder)
        rows = []
        from flashvl.kb.postgres_store import PostgresKBStore
        from flashvl.kb.sqlite_store import SqliteKBStore

        with postgres_server() as dsn:
            for size in args.sizes:
                for backend in ("sqlite", "postgres"):
                    if backend == "sqlite":
                        store: KBStore = SqliteKBStore(folder / f"bench-{size}.sqlite3")
                    else:
                        store = PostgresKBStore(dsn)
                        store.delete_collection("bench")
                    store.create_collection("bench", WHO.name)
                    kb = KnowledgeBase(store, settings, vision=runtime.vision, language=None, embedder=runtime.embedder)
                    row = await query_latency(kb, store, size, args.queries, random.Random(1))
                    rows.append({"backend": backend, **row})
                    print(json.dumps(rows[-1]), flush=True)
                    store.close()
        results["queries"] = rows
    results["load_1min_after"] = os.getloadavg()[0]
    return results


def write(results: dict[str, object], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "kb.json").write_text(json.dumps(results, indent=2) + "\n")
    indexing = results["indexing"]
    assert isinstance(indexing, dict)
    lines = [
        f"Indexing (real OCR + caption + e5 + SQLite): {indexing['pages']} pages in {indexing['seconds']} s = "
        f"**{indexing['pages_per_s']} pages/s** ({results['cpus']} CPUs, load {results['load_1min_before']:.1f})",
        "",
        "| backend | pages | insert pages/s | cold first query ms | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    rows = results["queries"]
    assert isinstance(rows, list)
    for row in rows:
        lines.append(
            f"| {row['backend']} | {row['pages']} | {row['insert_pages_per_s']} | {row['cold_ms']} | "
            f"{row['p50_ms']} | {row['p99_ms']} |"
        )
    (out / "kb.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for backend in ("sqlite", "postgres"):
        mine = [r for r in rows if r["backend"] == backend]
        sizes = [r["pages"] for r in mine]
        axis.plot(sizes, [r["p50_ms"] for r in mine], marker="o", label=f"{backend} p50")
        axis.plot(sizes, [r["p99_ms"] for r in mine], marker="x", linestyle="--", label=f"{backend} p99")
    axis.set_xscale("log")
    axis.set_xlabel("pages in the collection")
    axis.set_ylabel("query latency (ms)")
    axis.set_title("flashvl knowledge base: hybrid search latency")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "kb.png", dpi=120)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    write(asyncio.run(main(parser.parse_args())), parser.parse_args().out_dir)
