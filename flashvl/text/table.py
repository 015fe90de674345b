"""Tables rebuilt from OCR line boxes (used by ``tasks/document`` for /ocr and by ``tools/table`` for
the language stage's table queries).

Rows come from ``group_rows`` (vertical overlap); columns from the x-extents of the cells of every
multi-cell row in the table block, merged where a cell and a band overlap by half the narrower.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from flashvl.text.layout import TextLine, group_rows

BAND_OVERLAP = 0.5  # overlap, as a share of the narrower, for a cell to join a column band


@dataclass
class Table:
    rows: list[list[str]]
    column_bands: list[tuple[float, float]]
    first_row_index: int  # which text row the table starts at

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.column_bands)

    def to_markdown(self) -> str:
        if not self.rows:
            return ""

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        head, *body = self.rows
        return "\n".join([line(head), "| " + " | ".join("---" for _ in head) + " |", *map(line, body)])

    def to_csv(self) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(self.rows)
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        header, *records = self.rows or [[]]
        return {
            "n_rows": len(self.rows),
            "n_cols": len(self.column_bands),
            "rows": self.rows,
            "records": [dict(zip(header, r, strict=True)) for r in records]
            if len(set(header)) == len(header)
            else None,
            "markdown": self.to_markdown(),
            "csv": self.to_csv(),
        }


def _merge_bands(extents: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Column bands: a cell joins a band when they overlap by at least half the narrower of the two
    (cells of one column overlap a lot; the padded OCR boxes of neighbouring columns only touch)."""
    bands: list[list[float]] = []
    for x1, x2 in sorted(extents):
        narrower = min(x2 - x1, bands[-1][1] - bands[-1][0]) if bands else 0.0
        if bands and min(x2, bands[-1][1]) - x1 >= BAND_OVERLAP * max(narrower, 1e-6):
            bands[-1][1] = max(bands[-1][1], x2)
        else:
            bands.append([x1, x2])
    return [(a, b) for a, b in bands]


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def rebuild_table(lines: list[TextLine], min_rows: int = 2) -> Table | None:
    """The largest grid in the page, or None when no two consecutive rows have >= 2 cells each."""
    rows = group_rows(lines)
    best: tuple[int, int] | None = None
    start = None
    for index in range(len(rows) + 1):
        multi = index < len(rows) and len(rows[index]) >= 2
        if multi and start is None:
            start = index
        if not multi and start is not None:
            if index - start >= min_rows and (best is None or index - start > best[1] - best[0]):
                best = (start, index)
            start = None
    if best is None:
        return None
    block = rows[best[0] : best[1]]
    bands = _merge_bands([(cell.box[0], cell.box[2]) for row in block for cell in row])
    grid = []
    for row in block:
        cells = [""] * len(bands)
        for cell in row:
            column = max(range(len(bands)), key=lambda i: _overlap(bands[i], (cell.box[0], cell.box[2])))
            cells[column] = f"{cells[column]} {cell.text}".strip()
        grid.append(cells)
    return Table(grid, bands, best[0])
