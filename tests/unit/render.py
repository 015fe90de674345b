"""Render text into real images for the OCR tests (and anyone else who needs a document image)."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# Debian's fonts-wqy-microhei (1.6 MB) is the CJK font the tests expect; the others are fallbacks.
CJK_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)
LATIN_FONT_CANDIDATES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",)


@cache
def cjk_font_path() -> str:
    """A font with Chinese glyphs; raises with the install hint when there is none."""
    for candidate in CJK_FONT_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    try:
        listed = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listed = ""
    for line in listed.splitlines():
        path = line.split(":")[0].strip()
        if path and Path(path).is_file():
            return path
    raise FileNotFoundError("no CJK font found: install the Debian package fonts-wqy-microhei")


@cache
def latin_font_path() -> str:
    """DejaVu Sans, from matplotlib's bundled fonts or the system."""
    try:
        import matplotlib

        bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    for candidate in LATIN_FONT_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return cjk_font_path()


def render_text(
    lines: list[str],
    font_size: int = 28,
    *,
    font_path: str | None = None,
    width: int | None = None,
    margin: int = 24,
    line_gap: float = 0.8,
    background: tuple[int, int, int] = (255, 255, 255),
    colour: tuple[int, int, int] = (0, 0, 0),
) -> Image.Image:
    """Lines top to bottom, black on white by default; CJK font whenever a line needs it."""
    if font_path is None:
        needs_cjk = any(ord(char) > 0x2FFF for line in lines for char in line)
        font_path = cjk_font_path() if needs_cjk else latin_font_path()
    font = ImageFont.truetype(font_path, font_size)
    step = int(font_size * (1.0 + line_gap))
    text_width = max((int(font.getlength(line)) for line in lines), default=0)
    size = (width or text_width + 2 * margin, margin * 2 + step * len(lines))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((margin, margin + index * step), line, font=font, fill=colour)
    return image


def draw_at(
    image: Image.Image, xy: tuple[int, int], text: str, font_size: int = 28, font_path: str | None = None
) -> tuple[int, int, int, int]:
    """Draw ``text`` at ``xy`` in place; returns its ink box (x1, y1, x2, y2)."""
    font = ImageFont.truetype(font_path or latin_font_path(), font_size)
    draw = ImageDraw.Draw(image)
    draw.text(xy, text, font=font, fill=(0, 0, 0))
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    return int(left), int(top), int(right), int(bottom)


def render_table(rows: list[list[str]], font_size: int = 26, column_width: int = 200) -> Image.Image:
    """A grid-less table: each column left-aligned at a fixed x, like a printed invoice."""
    font = ImageFont.truetype(cjk_font_path(), font_size)
    step = int(font_size * 1.9)
    image = Image.new("RGB", (40 + column_width * len(rows[0]), 40 + step * len(rows)), "white")
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            draw.text((20 + c * column_width, 20 + r * step), cell, font=font, fill="black")
    return image


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def cer(predicted: str, truth: str) -> float:
    """Character error rate: edit distance over the length of the truth."""
    return edit_distance(predicted, truth) / max(1, len(truth))
