"""OCR on the real rapidocr models, fed with text rendered by PIL (see render.py for the fonts)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from render import cer, cjk_font_path, draw_at, latin_font_path, render_text
from skimage import data

from flashvl.stages.offline.ocr import TextReader
from flashvl.text.layout import TextLine, group_rows, lines_to_text

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Invoice 2024-117 was paid on 3 March for $597.00.",
    "Please keep this receipt for your records.",
]


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return TextReader()


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def screenshot() -> np.ndarray:
    """A 1280x800 app window: dark menu bar and small 14 px UI text."""
    image = Image.new("RGB", (1280, 800), (246, 246, 246))
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(latin_font_path(), 14)
    draw.rectangle((0, 0, 1280, 36), fill=(40, 40, 60))
    draw.text((16, 11), "File   Edit   View   Window   Help", font=font, fill=(255, 255, 255))
    for row in range(4):
        draw.text((240, 120 + 36 * row), f"Network > Proxy > Setting number {row}", font=font, fill=(20, 20, 20))
    return np.asarray(image)


def sign() -> np.ndarray:
    image = Image.new("RGB", (640, 480), (30, 120, 60))
    font = ImageFont.truetype(latin_font_path(), 48)
    ImageDraw.Draw(image).text((220, 200), "EXIT", font=font, fill=(255, 255, 255))
    return np.asarray(image)


def labelled_photo() -> np.ndarray:
    image = Image.fromarray(data.coffee())
    font = ImageFont.truetype(latin_font_path(), 30)
    ImageDraw.Draw(image).text((30, 340), "Espresso 3.50", font=font, fill=(255, 255, 255))
    return np.asarray(image)


def test_english_sentences_read_with_low_cer(reader: TextReader) -> None:
    image = as_array(render_text(ENGLISH, font_size=28))
    lines = reader.read(image)
    text = lines_to_text(lines)
    assert text.count("\n") == len(ENGLISH) - 1
    assert cer(text, "\n".join(ENGLISH)) < 0.05, text
    assert all(0.5 <= line.score <= 1.0 for line in lines)


def test_mixed_chinese_latin_lines_keep_exactly_the_rendered_spaces(reader: TextReader) -> None:
    """rapidocr alone returns '中文测试文本' for the third line; the spaces come from ink gaps."""
    rendered = [
        "单价 ¥199.00 合计 ¥597.00",
        "单价¥199.00合计¥597.00",
        "中文 测试 文本",
        "中文测试文本，很好。",
        "订单号：A1234，金额 50 元",
    ]
    image = as_array(render_text(rendered, font_size=28, font_path=cjk_font_path()))
    assert lines_to_text(reader.read(image)).split("\n") == rendered


def test_reading_order_of_a_two_column_layout(reader: TextReader) -> None:
    image = Image.new("RGB", (1000, 330), "white")
    left = ["Name: Alice Smith", "City: Lisbon", "Phone: 555 0199"]
    right = ["Age: 34", "Plan: Premium", "Status: active"]
    # Right column drawn first so drawing order cannot leak into the result.
    for index, text in enumerate(right):
        draw_at(image, (620, 40 + 100 * index), text)
    for index, text in enumerate(left):
        draw_at(image, (40, 40 + 100 * index), text)
    lines = reader.read(as_array(image))
    assert [line.text for line in lines] == [text for pair in zip(left, right, strict=True) for text in pair]
    rows = [row.split("\t") for row in lines_to_text(lines).split("\n")]
    assert rows == [list(pair) for pair in zip(left, right, strict=True)]


def test_paragraph_lines_come_back_top_to_bottom(reader: TextReader) -> None:
    image = Image.new("RGB", (900, 400), "white")
    order = [2, 0, 3, 1]  # drawn out of order
    for index in order:
        draw_at(image, (40, 40 + 80 * index), f"This is paragraph line number {index + 1}")
    texts = [line.text for line in reader.read(as_array(image))]
    assert texts == [f"This is paragraph line number {index}" for index in range(1, 5)]


def test_boxes_are_axis_aligned_hulls_in_input_pixels(reader: TextReader) -> None:
    image = Image.new("RGB", (1100, 700), "white")
    drawn = {
        "Quarterly revenue report": draw_at(image, (60, 50), "Quarterly revenue report", font_size=36),
        "Total 4,250 units": draw_at(image, (600, 600), "Total 4,250 units", font_size=24),
    }
    lines = reader.read(as_array(image))
    assert {line.text for line in lines} == set(drawn)
    for line in lines:
        x1, y1, x2, y2 = line.box
        assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
        ix1, iy1, ix2, iy2 = drawn[line.text]
        assert x1 <= ix1 + 4 and y1 <= iy1 + 4 and x2 >= ix2 - 4 and y2 >= iy2 - 4  # hull holds the ink
        assert (x2 - x1) < 1.3 * (ix2 - ix1) + 20 and (y2 - y1) < 2.0 * (iy2 - iy1) + 10  # and is tight


def test_min_score_drops_low_confidence_lines(reader: TextReader, monkeypatch: pytest.MonkeyPatch) -> None:
    small = as_array(render_text(["Small blurry words"], font_size=28).resize((260, 36)))
    lines = reader.read(small)
    lowest = min(line.score for line in lines)
    monkeypatch.setattr(reader, "min_score", lowest + 1e-6)
    kept = reader.read(small)
    assert kept == [line for line in lines if line.score > lowest]
    assert len(kept) < len(lines)


@pytest.mark.parametrize(
    "name, make",
    [
        ("document", lambda: as_array(render_text(ENGLISH * 4, font_size=18))),
        ("chinese document", lambda: as_array(render_text(["单价 ¥199.00 合计 ¥597.00"] * 3, font_size=24))),
        ("screenshot", screenshot),
        ("sign", sign),
        ("labelled photo", labelled_photo),
        ("scanned page", lambda: data.page()),
    ],
)
def test_has_text_is_true_on_images_with_text(reader: TextReader, name: str, make) -> None:
    assert reader.has_text(make()), name


@pytest.mark.parametrize(
    "name, make",
    [
        ("astronaut", data.astronaut),
        ("coffee", data.coffee),
        ("chelsea", data.chelsea),
        ("plain colour", lambda: np.full((480, 640, 3), (30, 90, 200), np.uint8)),
        ("colour gradient", lambda: np.dstack([np.tile(np.linspace(0, 255, 640), (480, 1))] * 3)),
    ],
)
def test_has_text_is_false_on_photos_without_text(reader: TextReader, name: str, make) -> None:
    assert not reader.has_text(make()), name


def test_read_returns_nothing_for_a_plain_image(reader: TextReader) -> None:
    assert reader.read(np.full((300, 400, 3), 200, np.uint8)) == []


def test_grey_and_rgba_inputs_are_read(reader: TextReader) -> None:
    rgb = render_text(["Grey scale input works"], font_size=28)
    rgba = rgb.convert("RGBA")
    assert [line.text for line in reader.read(np.asarray(rgb.convert("L")))] == ["Grey scale input works"]
    assert [line.text for line in reader.read(np.asarray(rgba))] == ["Grey scale input works"]


def test_group_rows_merges_overlapping_extents_only() -> None:
    def line(text: str, x: float, y: float, h: float = 30.0) -> TextLine:
        return TextLine(text, 0.9, (x, y, x + 100.0, y + h))

    lines = [line("c", 0, 52), line("b", 400, 6), line("a", 0, 0), line("d", 400, 50)]
    assert [[item.text for item in row] for row in group_rows(lines)] == [["a", "b"], ["c", "d"]]
    # Neighbouring rows whose boxes touch by a few pixels stay separate.
    touching = [line("top", 0, 0), line("below", 0, 26)]
    assert lines_to_text(touching) == "top\nbelow"
    near = [line("left", 0, 0), line("right", 120, 0)]
    assert lines_to_text(near) == "left right"


def test_loading_and_reading_download_nothing_and_write_nothing_to_cwd(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network guard, not a mock: any socket rapidocr tried to open would raise."""

    def no_network(*args, **kwargs):
        raise AssertionError("OCR tried to open a network connection")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    offline_reader = TextReader(threads=1)
    assert offline_reader.read(as_array(render_text(["Offline only"], font_size=28)))[0].text == "Offline only"
    assert os.listdir(tmp_path) == []
