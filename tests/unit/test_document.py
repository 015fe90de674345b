"""Documents: reading order, tables from boxes, the caller's schema checked (real OCR where marked)."""

from __future__ import annotations

import numpy as np
import pytest
from render import cer, render_table, render_text

from flashvl.errors import FlashvlError
from flashvl.stages.offline.ocr import TextReader
from flashvl.tasks.document import conforms, grounding, read_document, rebuild_table, validate_schema
from flashvl.text.layout import TextLine

ZH_EN_DOC = [
    "发票号码 INV-2024-0387",
    "开票日期 2024年3月15日",
    "购买方 Northwind Traders 有限公司",
    "合计金额 USD 71.50",
]
EN_DOC = [
    "Quarterly report for the board",
    "Revenue grew 12% to 4.3 million",
    "Costs were flat at 2.1 million",
]
TABLE = [
    ["Item", "Qty", "Unit price", "Amount"],
    ["Widget A", "2", "12.50", "25.00"],
    ["Widget B", "1", "40.00", "40.00"],
    ["苹果", "10", "3.20", "32.00"],
]


def line(text: str, x1: float, y1: float, x2: float, y2: float) -> TextLine:
    return TextLine(text, 0.99, (x1, y1, x2, y2))


# ------------------------------------------------------------------ tables from boxes (no model)


def test_table_from_boxes_handles_left_and_right_aligned_columns_and_a_title() -> None:
    lines = [
        line("Price list", 10, 0, 200, 20),  # a title: one cell, not part of the grid
        line("Name", 10, 40, 60, 60),
        line("Price", 200, 40, 260, 60),
        line("Apple", 10, 80, 70, 100),
        line("3.5", 235, 80, 260, 100),  # right-aligned number
        line("Watermelon", 10, 120, 130, 140),
        line("12.25", 210, 120, 260, 140),
        line("Pear", 10, 160, 50, 180),  # missing price: an empty cell, not a shifted row
    ]
    table = rebuild_table(lines)
    assert table is not None
    assert table.rows == [["Name", "Price"], ["Apple", "3.5"], ["Watermelon", "12.25"]]
    assert table.to_csv() == "Name,Price\nApple,3.5\nWatermelon,12.25\n"
    assert table.to_markdown().splitlines()[1] == "| --- | --- |"
    assert table.to_dict()["records"][1] == {"Name": "Watermelon", "Price": "12.25"}


def test_no_table_in_plain_prose() -> None:
    lines = [line("One sentence on its own row.", 10, 0, 300, 20), line("Another one.", 10, 40, 150, 60)]
    assert rebuild_table(lines) is None
    assert read_document(lines)["tables"] == []
    assert read_document(lines)["text"] == "One sentence on its own row.\nAnother one."


def test_reading_order_is_rows_top_down_then_left_to_right() -> None:
    lines = [line("right", 300, 100, 360, 120), line("top", 10, 0, 60, 20), line("left", 10, 102, 60, 122)]
    ordered = read_document(lines)["lines"]
    assert [item["text"] for item in ordered] == ["top", "left", "right"]
    assert [item["row"] for item in ordered] == [0, 1, 1]


# ------------------------------------------------------------------ the caller's schema


INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string"},
        "date": {"type": "string"},
        "total": {"type": "number"},
    },
    "required": ["invoice_number", "date", "total"],
}


def test_schema_validation_accepts_a_plain_schema_and_refuses_bad_ones() -> None:
    assert validate_schema(INVOICE_SCHEMA) is INVOICE_SCHEMA
    deep: dict = {"type": "string"}
    for _ in range(8):
        deep = {"type": "object", "properties": {"x": deep}}
    bad = [
        ["not", "an", "object"],
        {"type": "string"},
        {
            "type": "object",
            "properties": {"a": {"type": "string", "pattern": "(a+)+$"}},
        },  # keyword not allowed
        {"type": "object", "properties": {"a": {"$ref": "#"}}},
        {"type": "object", "properties": {"a": {"type": "strin"}}},
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
        {
            "type": "object",
            "properties": {f"f{i}": {"type": "string", "description": "x" * 200} for i in range(60)},
        },
        deep,
    ]
    for schema in bad:
        with pytest.raises(FlashvlError) as caught:
            validate_schema(schema, max_bytes=8192, max_depth=5)
        assert caught.value.code == "invalid_json_schema"


def test_conforms_and_grounding() -> None:
    assert conforms({"invoice_number": "INV-1", "date": "2024-03-15", "total": 71.5}, INVOICE_SCHEMA)
    assert not conforms({"invoice_number": "INV-1", "date": "2024-03-15"}, INVOICE_SCHEMA)
    assert not conforms({"invoice_number": 7, "date": "x", "total": 1}, INVOICE_SCHEMA)
    text = "Invoice No: INV-2024-0387\nTotal: USD 71.50"
    assert grounding({"invoice_number": "INV 2024 0387", "total": "99.00"}, text) == {
        "invoice_number": True,
        "total": False,
    }


# ------------------------------------------------------------------ real OCR on rendered pages


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return TextReader()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "lines", "bound"), [("zh-en", ZH_EN_DOC, 0.05), ("en", EN_DOC, 0.03)])
def test_rendered_documents_read_back_with_a_low_character_error_rate(
    reader: TextReader, name: str, lines: list[str], bound: float
) -> None:
    image = np.asarray(render_text(lines, font_size=28))
    document = read_document(reader.read(image))
    rate = cer(document["text"], "\n".join(lines))
    print(f"CER {name}: {rate:.4f}  read: {document['text']!r}")
    assert rate <= bound
    assert all(0 < item["confidence"] <= 1 and len(item["box"]) == 4 for item in document["lines"])
    if name == "zh-en":
        assert "Northwind Traders" in document["text"]  # spaces next to Chinese kept
        assert "购买方 Northwind" in document["text"]


@pytest.mark.slow
def test_rendered_table_is_rebuilt_cell_for_cell(reader: TextReader) -> None:
    document = read_document(reader.read(np.asarray(render_table(TABLE))))
    assert len(document["tables"]) == 1
    table = document["tables"][0]
    wrong = [
        (r, c)
        for r, row in enumerate(TABLE)
        for c, cell in enumerate(row)
        if r >= len(table["rows"]) or table["rows"][r][c] != cell
    ]
    print(f"table {table['n_rows']}x{table['n_cols']}, wrong cells: {wrong}\n{table['markdown']}")
    assert (table["n_rows"], table["n_cols"]) == (len(TABLE), len(TABLE[0]))
    assert wrong == []
    assert table["csv"].splitlines()[0] == "Item,Qty,Unit price,Amount"


# ------------------------------------------------------------------ space-aligned tables (issue 20)

SPACE_ALIGNED = ["Item      Q1   Q2   Q3", "Apples    10   20   30", "Pears     40   50   60", "Plums     70   80   90"]


def test_padded_boxes_of_neighbouring_columns_stay_separate_columns() -> None:
    # OCR boxes are padded, so neighbouring columns' boxes touch; the columns must not merge.
    lines = []
    for r, cells in enumerate(row.split() for row in SPACE_ALIGNED):
        y = 20 + 46 * r
        lines.append(line(cells[0], 16, y, 100, y + 30))
        for c, cell in enumerate(cells[1:]):
            x = 126 + 60 * c + (r % 2) * 8  # boxes of one column jitter; each overlaps the next by ~6 px
            lines.append(line(cell, x, y, x + 66, y + 30))
    table = rebuild_table(lines)
    assert table is not None and table.shape == (4, 4)
    assert table.rows == [row.split() for row in SPACE_ALIGNED]


def test_a_row_read_as_one_line_is_split_at_its_column_gaps() -> None:
    from flashvl.stages.offline.ocr import split_at_column_gaps

    def glyph(char: str, x1: float, x2: float) -> tuple[str, float, list[list[float]]]:
        return (char, 0.99, [[x1, 10], [x2, 10], [x2, 40], [x1, 40]])

    # The recogniser read "60     70" as "6070" (dropped the wide space); the glyph boxes show the gap.
    chars = [glyph("6", 100, 114), glyph("0", 114, 128), glyph("7", 170, 184), glyph("0", 184, 198)]
    cells = split_at_column_gaps("6070", 0.9, (95.0, 8.0, 203.0, 42.0), chars)
    assert [c.text for c in cells] == ["60", "70"]
    assert cells[0].box[2] <= 128 < 170 <= cells[1].box[0]  # each cell's box spans its own glyphs
    # an ordinary word space is no column gap
    words = [glyph("a", 100, 112), glyph("b", 112, 124), glyph("c", 132, 144)]
    assert [c.text for c in split_at_column_gaps("ab c", 0.9, (95.0, 8.0, 150.0, 42.0), words)] == ["ab c"]


@pytest.mark.slow
def test_rendered_space_aligned_table_is_rebuilt(reader: TextReader) -> None:
    from PIL import Image, ImageDraw, ImageFont
    from render import latin_font_path

    image = Image.new("RGB", (520, 220), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(latin_font_path(), 26)
    for r, row in enumerate(SPACE_ALIGNED):  # one string a row, columns aligned by runs of spaces
        draw.text((20, 20 + 46 * r), row, font=font, fill="black")
    document = read_document(reader.read(np.asarray(image)))
    assert len(document["tables"]) == 1, document["text"]
    assert document["tables"][0]["rows"] == [row.split() for row in SPACE_ALIGNED]
