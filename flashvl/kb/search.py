"""Hybrid search over a collection's pages: BM25 over jieba-segmented tokens plus e5 embeddings,
fused by reciprocal rank; image queries first by perceptual hash (near-duplicates), then by their OCR
text and description. Everything here is in-process numpy/Python over the store's pages.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from flashvl.kb.store import Page

K1, B = 1.2, 0.75
RRF_K = 60  # reciprocal rank fusion: 1 / (RRF_K + rank)
PHASH_NEAR = 10  # Hamming distance (of 64 bits) under which two images are near-duplicates
_STOP_EN = "a an the is are was were be been of to in on at for and or what which who how does do did i you it"
_STOP_EN += " this that with by from as can my your our me we they there where when why"
_STOP_ZH = "的 了 是 在 和 与 或 吗 呢 什么 怎么 如何 哪 哪个 哪些 多少 一个 这个 那个"
_STOP_ZH += " 请问 我 你 我们 吧 啊 把 被 有 没有"
STOPWORDS = frozenset(f"{_STOP_EN} {_STOP_ZH}".split())
_WORD = re.compile(r"\w", re.UNICODE)
_jieba_lock = threading.Lock()
_jieba: Any = None


def _segmenter() -> Any:
    global _jieba
    with _jieba_lock:
        if _jieba is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            _jieba = jieba
    return _jieba


def tokenize(text: str, *, keep_stopwords: bool = False) -> list[str]:
    """Lower-cased words: Chinese segmented by jieba (search mode: words and their sub-words), Latin
    words and numbers whole; punctuation and (unless asked) stopwords dropped."""
    words = _segmenter().lcut_for_search(text.lower())
    return [w for w in (w.strip() for w in words) if w and _WORD.search(w) and (keep_stopwords or w not in STOPWORDS)]


def phash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash (32x32 grey, top-left 8x8 DCT coefficients against their median)."""
    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    n = 32
    k = np.arange(n)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    dct = basis @ grey @ basis.T
    low = dct[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@dataclass
class Hit:
    page: Page
    score: float
    bm25: float = 0.0
    cosine: float = 0.0
    phash_distance: int | None = None
    matched: list[int] = field(default_factory=list)  # indexes of the page's OCR lines that match

    def snippet(self, terms: list[str], width: int = 160) -> tuple[str, list[list[int]]]:
        """The best-matching stretch of the page's text, and where the query's words are in it
        ([start, end) character offsets, for highlighting with textContent, never HTML)."""
        text = self.page.text or self.page.description
        lowered = text.lower()
        spots = [(m.start(), m.end()) for term in terms for m in re.finditer(re.escape(term), lowered)]
        start = 0
        if spots:
            first = min(s for s, _ in spots)
            start = max(0, first - width // 4)
            newline = text.rfind("\n", 0, first)
            if newline >= start - width // 4 and newline >= 0:
                start = newline + 1
        snippet = text[start : start + width].replace("\n", " / ")
        highlights = sorted(
            [s - start + _shift(text, start, s), e - start + _shift(text, start, e)]
            for s, e in spots
            if s >= start and e <= start + width
        )
        merged: list[list[int]] = []
        for s, e in highlights:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        return snippet, merged

    def to_dict(self, terms: list[str]) -> dict[str, Any]:
        snippet, highlights = self.snippet(terms)
        return {
            "document": self.page.document,
            "document_id": self.page.document_id,
            "page": self.page.page,
            "snippet": snippet,
            "highlights": highlights,
            "score": round(self.score, 4),
            "bm25": round(self.bm25, 3),
            "cosine": round(self.cosine, 4),
            "phash_distance": self.phash_distance,
            "matched_lines": self.matched,
            "lines": [{"text": line["text"], "box": line["box"]} for line in self.page.lines],
            "width": self.page.width,
            "height": self.page.height,
            "uploaded_at": self.page.uploaded_at,
        }


def _shift(text: str, start: int, offset: int) -> int:
    """Offsets grow by 2 for every newline before ``offset`` (each became " / ")."""
    return 2 * text.count("\n", start, offset)


class Index:
    """One collection's pages, ready to search: an inverted index for BM25 and a matrix of embeddings."""

    def __init__(self, pages: list[Page], generation: int) -> None:
        self.pages = pages
        self.generation = generation
        lists: dict[str, list[tuple[int, int]]] = {}
        self.lengths = np.array([max(len(p.tokens), 1) for p in pages], dtype=np.float32)
        for index, page in enumerate(pages):
            for term, count in Counter(page.tokens).items():
                lists.setdefault(term, []).append((index, count))
        # term -> (page rows, term counts) as arrays: a query term costs one vectorised update
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {
            term: (np.array([i for i, _ in rows], dtype=np.int64), np.array([c for _, c in rows], dtype=np.float32))
            for term, rows in lists.items()
        }
        self.average = float(self.lengths.mean()) if pages else 1.0
        dims = pages[0].embedding.shape[0] if pages else 384
        self.matrix = np.stack([p.embedding for p in pages]) if pages else np.zeros((0, dims), np.float32)
        self.hashes = np.array([p.phash for p in pages], dtype=np.uint64)

    def bm25(self, terms: list[str]) -> np.ndarray:
        scores = np.zeros(len(self.pages), dtype=np.float32)
        n = len(self.pages)
        for term in set(terms):
            posting = self.postings.get(term)
            if posting is None:
                continue
            rows, tf = posting
            idf = math.log(1 + (n - len(rows) + 0.5) / (len(rows) + 0.5))
            norm = K1 * (1 - B + B * self.lengths[rows] / self.average)
            scores[rows] += idf * tf * (K1 + 1) / (tf + norm)
        return scores

    def search(
        self,
        terms: list[str],
        vector: np.ndarray | None,
        *,
        top_k: int,
        allowed: np.ndarray | None = None,
        image_hash: int | None = None,
    ) -> list[Hit]:
        if not self.pages:
            return []
        bm25 = self.bm25(terms)
        cosine = self.matrix @ vector if vector is not None else np.zeros(len(self.pages), np.float32)
        fused = np.zeros(len(self.pages), dtype=np.float64)
        mask = allowed if allowed is not None else np.ones(len(self.pages), dtype=bool)
        for scores, only_positive in ((bm25, True), (cosine, False)):
            order = np.argsort(-scores, kind="stable")
            order = order[mask[order]]
            if only_positive:
                order = order[scores[order] > 0]
            fused[order] += 1.0 / (RRF_K + 1 + np.arange(len(order)))
        distances: np.ndarray | None = None
        if image_hash is not None:
            distances = np.array([hamming(int(h), image_hash) for h in self.hashes])
            near = (distances <= PHASH_NEAR) & mask
            fused[near] += 1.0  # a near-duplicate outranks every text match
        candidates = np.flatnonzero(mask & (fused > 0))
        best = candidates[np.argsort(-fused[candidates], kind="stable")][:top_k]
        hits = []
        for i in best:
            page = self.pages[int(i)]
            matched = [n for n, line in enumerate(page.lines) if any(t in line["text"].lower() for t in terms)]
            hits.append(
                Hit(
                    page,
                    float(fused[i]),
                    float(bm25[i]),
                    float(cosine[i]),
                    None if distances is None else int(distances[i]),
                    matched,
                )
            )
        return hits

    def filter(self, documents: list[str] | None, since: float | None, until: float | None) -> np.ndarray | None:
        if not documents and since is None and until is None:
            return None
        names = set(documents or [])
        return np.array(
            [
                (not names or page.document in names or page.document_id in names)
                and (since is None or page.uploaded_at >= since)
                and (until is None or page.uploaded_at <= until)
                for page in self.pages
            ],
            dtype=bool,
        )
