"""OCR line layout: lines as boxes, grouped into rows, rows into text (shared by the OCR stage and
the document tasks; no model here)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class TextLine:
    text: str
    score: float  # recogniser confidence 0..1
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in input pixels (hull of the quad)

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def group_rows(lines: list[TextLine]) -> list[list[TextLine]]:
    """Rows top to bottom; a line joins a row when their vertical extents overlap by half the smaller."""
    rows: list[list[TextLine]] = []
    for line in sorted(lines, key=lambda item: (item.box[1] + item.box[3]) / 2):
        if rows:
            top = min(item.box[1] for item in rows[-1])
            bottom = max(item.box[3] for item in rows[-1])
            row_height = min(item.height for item in rows[-1])
            overlap = min(bottom, line.box[3]) - max(top, line.box[1])
            if overlap >= 0.5 * min(row_height, line.height):
                rows[-1].append(line)
                continue
        rows.append([line])
    return [sorted(row, key=lambda item: item.box[0]) for row in rows]


def lines_to_text(lines: list[TextLine]) -> str:
    """Rows become lines; within a row, pieces far apart (a column gap) get a tab, near ones a space."""
    out = []
    for row in group_rows(lines):
        parts = [row[0].text]
        for left, right in itertools.pairwise(row):
            gap = right.box[0] - left.box[2]
            parts.append("\t" if gap > 2.0 * max(left.height, right.height) else " ")
            parts.append(right.text)
        out.append("".join(parts))
    return "\n".join(out)
