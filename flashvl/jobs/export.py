"""Results export: JSONL (one finished item per line) and CSV (flat columns)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

CSV_BASE = ["key", "status", "failures", "error"]


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _flat(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, dict) and "category" in v for v in value):
        return ";".join(v["category"] for v in value)  # moderation categories read best as names
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Base columns, then the result's top-level fields (nested ones as JSON; categories as names)."""
    extra: list[str] = []
    for row in rows:
        for name in row.get("result") or {}:
            if name not in extra and name not in ("stages",):
                extra.append(name)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_BASE + extra)
    for row in rows:
        result = row.get("result") or {}
        writer.writerow(
            [row.get(c) if row.get(c) is not None else "" for c in CSV_BASE]
            + [_flat(result[c]) if c in result else "" for c in extra]
        )
    return buffer.getvalue()


def write_atomically(path: Path, text: str) -> None:
    """Write beside the target, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)
