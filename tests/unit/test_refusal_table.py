"""The README's refusal table matches the code: each row's code is raised with that status somewhere in
``flashvl/``, and every code the media intake and the body/header limits raise has a row."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ERROR_TYPES = {"MediaError", "FlashvlError", "StageUnavailable"}


def _constant(node: ast.expr | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def raised_codes() -> dict[str, set[tuple[int, str]]]:
    """code -> {(status, file)} for every ``MediaError(...)``/``FlashvlError(...)``/``BodyRefused(...)``."""
    found: dict[str, set[tuple[int, str]]] = {}
    for path in (ROOT / "flashvl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            code: object = None
            status: object = None
            if name == "__init__" and len(node.args) >= 3:  # an error subclass: super().__init__(code, msg, status)
                code, status = _constant(node.args[0]), _constant(node.args[2])
            elif name in ERROR_TYPES and node.args:
                code = _constant(node.args[0])
                status = _constant(node.args[2]) if len(node.args) > 2 else 400
                status = next((_constant(k.value) for k in node.keywords if k.arg == "status"), status)
                if name == "StageUnavailable":
                    code, status = "stage_unavailable", 503
            elif name == "BodyRefused" and len(node.args) >= 2:
                status, code = _constant(node.args[0]), _constant(node.args[1])
            if isinstance(code, str) and isinstance(status, int):
                found.setdefault(code, set()).add((status, str(path.relative_to(ROOT))))
    return found


def readme_rows() -> list[tuple[list[str], list[int]]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Media intake and its refusals", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = re.match(r"\| (`[^|]+`) \| ([\d /]+) \|", line)
        if match:
            codes = re.findall(r"`([a-z0-9_]+)`", match.group(1))
            statuses = [int(s) for s in re.findall(r"\d{3}", match.group(2))]
            rows.append((codes, statuses))
    return rows


def test_every_readme_row_is_raised_with_its_status() -> None:
    raised = raised_codes()
    rows = readme_rows()
    assert len(rows) > 30
    for codes, statuses in rows:
        for i, code in enumerate(codes):
            assert code in raised, f"README lists {code!r}, which nothing in flashvl/ raises"
            status = statuses[i] if len(statuses) == len(codes) else statuses[0]
            assert status in {s for s, _ in raised[code]}, (code, status, raised[code])


def test_every_intake_and_limit_refusal_has_a_row() -> None:
    documented = {code for codes, _ in readme_rows() for code in codes}
    raised = raised_codes()
    for code, places in raised.items():
        intake = any(p.startswith(("flashvl/media/", "flashvl/api/middleware.py")) for _, p in places)
        if intake:
            assert code in documented, f"{code!r} (raised in {sorted(places)}) has no row in the README table"
