"""Content hashes for stage fingerprints: what a model file or folder *is*, not where or when it was loaded.

A file's sha256 is computed once per process and remembered by (path, size, mtime): a second
stage on the same file, or a second call, costs a ``stat``. Hashing reads the whole file, so
stages do it in ``load`` (off the event loop), never per request.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

_CHUNK_BYTES = 8 * 1024 * 1024
_hashes: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()

# A Hugging Face cache snapshot: .../models--org--name/snapshots/<commit sha>/
_SNAPSHOT = re.compile(r"models--(?P<repo>[^/]+)/snapshots/(?P<revision>[0-9a-f]{40})$")


def file_sha256(path: Path | str) -> str:
    """The sha256 of a file's content (hex), read once per (path, size, mtime) in this process."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    with _lock:
        known = _hashes.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with resolved.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    value = digest.hexdigest()
    with _lock:
        _hashes[key] = value
    return value


def folder_sha256(folder: Path | str) -> str:
    """One sha256 over the name and content hash of every file of a model folder (recursively;
    hidden files and READMEs left out): config, tokenizer, processor configs, weight index, weights."""
    root = Path(folder).resolve()
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in relative.split("/")) or path.name.lower().startswith("readme"):
            continue
        digest.update(f"{relative}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def hub_snapshot(folder: Path | str) -> tuple[str, str] | None:
    """(repo id, commit) when ``folder`` is a Hugging Face cache snapshot, else None."""
    match = _SNAPSHOT.search(Path(folder).resolve().as_posix())
    if match is None:
        return None
    return match["repo"].replace("--", "/"), match["revision"]
