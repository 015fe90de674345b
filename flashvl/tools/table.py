"""Queries over a table rebuilt from OCR (``flashvl.text.table``): lookup, compare, max/min/sum/average.

Columns and rows are found by name in the header and the first column (exact, then contained,
case-insensitive, spaces ignored). A name that is in neither is answered with "not observed" and the
names that were read, never with another column's value. Every answer lists the cells it used.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

OPERATIONS = ("lookup", "max", "min", "sum", "average", "compare")
MAX_CELLS = 2000


class TableError(ValueError):
    """The query names no column or row of the table, or the cells are not numbers."""


def _key(text: str) -> str:
    return re.sub(r"[\s:：()()]", "", text).lower()


def _find(name: str, names: list[str]) -> int | None:
    wanted = _key(name)
    if not wanted:
        return None
    keys = [_key(n) for n in names]
    if wanted in keys:
        return keys.index(wanted)
    contained = [i for i, k in enumerate(keys) if k and (wanted in k or k in wanted)]
    return contained[0] if len(contained) == 1 else None


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def number_in(cell: str) -> Decimal | None:
    """The first number in a cell (``¥1,200.50`` -> 1200.50), or None."""
    match = _NUMBER.search(cell)
    if match is None:
        return None
    try:
        return Decimal(match.group(0).replace(",", ""))
    except InvalidOperation:
        return None


def _show(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.quantize(Decimal("1e-6")).normalize(), "f")


def query_table(
    rows: list[list[str]], operation: str, column: str = "", row: str = "", other_row: str = ""
) -> dict[str, Any]:
    """Answer one query over ``rows`` (the first row is the header). Raises ``TableError``."""
    if operation not in OPERATIONS:
        raise TableError(f"operation must be one of {', '.join(OPERATIONS)}")
    if len(rows) < 2 or sum(len(r) for r in rows) > MAX_CELLS:
        raise TableError("no table of at least a header and one row was read")
    header, body = rows[0], rows[1:]
    labels = [r[0] if r else "" for r in body]
    col = _find(column, header) if column else None
    if column and col is None:
        return {
            "operation": operation,
            "observed": False,
            "not_observed": f"column {column!r}",
            "columns": header,
            "rows": labels,
        }
    if operation in {"lookup", "compare"}:
        names = [row] + ([other_row] if operation == "compare" else [])
        found = [_find(n, labels) for n in names]
        missing = [n for n, i in zip(names, found, strict=True) if i is None]
        if missing or col is None:
            return {
                "operation": operation,
                "observed": False,
                "not_observed": f"row {missing[0]!r}" if missing else "which column (none named)",
                "columns": header,
                "rows": labels,
            }
        cells = [{"row": labels[i], "column": header[col], "value": body[i][col]} for i in found if i is not None]
        out: dict[str, Any] = {"operation": operation, "observed": True, "cells": cells}
        if operation == "compare":
            a, b = (number_in(c["value"]) for c in cells)
            if a is not None and b is not None:
                out["difference"] = _show(a - b)
                out["larger"] = cells[0]["row"] if a > b else cells[1]["row"] if b > a else "equal"
        else:
            out["value"] = cells[0]["value"]
        return out
    if col is None:
        numeric = [i for i in range(1, len(header)) if any(number_in(r[i]) is not None for r in body if i < len(r))]
        if len(numeric) != 1:
            return {
                "operation": operation,
                "observed": False,
                "not_observed": "which column (none named)",
                "columns": header,
                "rows": labels,
            }
        col = numeric[0]
    used = [(labels[i], r[col], number_in(r[col])) for i, r in enumerate(body) if col < len(r)]
    cells = [{"row": label, "column": header[col], "value": value} for label, value, n in used if n is not None]
    numbers = [n for _, _, n in used if n is not None]
    if not cells:
        raise TableError(f"column {header[col]!r} has no numbers")
    out = {"operation": operation, "observed": True, "column": header[col], "cells": cells}
    if operation in {"max", "min"}:
        pick = max if operation == "max" else min
        best = pick(numbers)
        out["value"] = _show(best)
        out["rows"] = [c["row"] for c, n in zip(cells, numbers, strict=True) if n == best]
    elif operation == "sum":
        out["value"] = _show(sum(numbers, Decimal(0)))
    else:
        out["value"] = _show(sum(numbers, Decimal(0)) / Decimal(len(numbers)))
    return out
