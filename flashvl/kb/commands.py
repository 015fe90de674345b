"""``flashvl kb add COLLECTION DIR_OR_FILES...``: what it indexes, in order, and how it reports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flashvl.kb.service import KnowledgeBase, Who

SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".pdf"})


def collect(sources: list[Path]) -> list[Path]:
    """The files to index: each file named, and each folder's images and PDFs (recursively), sorted."""
    found: list[Path] = []
    for source in sources:
        if source.is_dir():
            found.extend(sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES))
        elif source.is_file():
            found.append(source)
        else:
            raise FileNotFoundError(f"no such file or folder: {source}")
    return found


async def add_paths(
    kb: KnowledgeBase,
    collection: str,
    paths: list[Path],
    who: Who,
    on_file: Callable[[Path, dict[str, Any]], None] | None = None,
) -> dict[str, int]:
    """Index ``paths`` one file at a time; each file is committed as it finishes, so an interrupted run
    resumes where it stopped (files already indexed, by content hash, are skipped)."""
    counts = {"indexed": 0, "skipped": 0, "failed": 0, "pages": 0}
    for path in paths:
        try:
            result = await kb.add(collection, path.name, path.read_bytes(), who)
        except Exception as exc:  # one bad file never stops the rest
            message = getattr(exc, "message", None) or str(exc)
            result = {"document": path.name, "status": "failed", "error": f"{getattr(exc, 'code', 'error')}: {message}"}
        counts[result["status"]] += 1
        counts["pages"] += int(result.get("pages", 0))
        if on_file is not None:
            on_file(path, result)
    return counts
