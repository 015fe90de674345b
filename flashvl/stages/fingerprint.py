"""Content hashes for stage fingerprints: what a model file or folder *is*, not where or when it was loaded.

A file's sha256 is computed once and remembered by (path, inode, size, mtime): in the process,
and for big files (weights) also on disk under ``$XDG_CACHE_HOME/flashvl/file-hashes`` (one small
file per entry, written atomically), so a restart of a server with a 20 GB model folder costs a
``stat`` per file, not a re-read. Any change to the file changes its size or mtime and misses.
Hashing reads the whole file, so stages do it in ``load`` (off the event loop), never per request.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path

_CHUNK_BYTES = 8 * 1024 * 1024
_DISK_MEMO_MIN_BYTES = 64 * 1024 * 1024
_hashes: dict[tuple[str, int, int, int], str] = {}
_lock = threading.Lock()

# A Hugging Face cache snapshot: .../models--org--name/snapshots/<commit sha>/
_SNAPSHOT = re.compile(r"models--(?P<repo>[^/]+)/snapshots/(?P<revision>[0-9a-f]{40})$")


def file_sha256(path: Path | str) -> str:
    """The sha256 of a file's content (hex), read once per (path, size, mtime) in this process."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _lock:
        known = _hashes.get(key)
    memo = _disk_memo(key) if stat.st_size >= _DISK_MEMO_MIN_BYTES else None
    if known is None and memo is not None:
        with contextlib.suppress(OSError):
            text = memo.read_text().strip()
            known = text if re.fullmatch(r"[0-9a-f]{64}", text) else None
    if known is not None:
        with _lock:
            _hashes[key] = known
        return known
    digest = hashlib.sha256()
    with resolved.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    value = digest.hexdigest()
    with _lock:
        _hashes[key] = value
    if memo is not None:
        _write_memo(memo, value)
    return value


def _disk_memo(key: tuple[str, int, int, int]) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flashvl" / "file-hashes"
    return base / hashlib.sha256(repr(key).encode()).hexdigest()


def _write_memo(memo: Path, value: str) -> None:
    """Best effort (a read-only home only costs a re-hash next start); atomic, so readers never see half."""
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=memo.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
        os.replace(tmp, memo)


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
