"""Render text into real images for the OCR tests (and anyone else who needs a document image)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# The one CJK font the tests render Chinese with: the exact OCR output they assert depends on the
# glyphs, so another Chinese font (Noto Sans CJK, ...) is never substituted. scripts/system-deps.sh
# (run by `make test`) installs this package by name and checks for this very file.
CJK_FONT_FILE = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
CJK_FONT_PACKAGE = "fonts-wqy-microhei"
LATIN_FONT_CANDIDATES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",)


class MissingTestFont(FileNotFoundError):
    """The font file the OCR tests are written against is not installed."""


@cache
def cjk_font_path() -> str:
    """WenQuanYi Micro Hei's file; raises naming the Debian package when it is missing."""
    if not Path(CJK_FONT_FILE).is_file():
        raise MissingTestFont(
            f"the OCR tests render Chinese with {CJK_FONT_FILE}, which is missing: install the Debian "
            f"package {CJK_FONT_PACKAGE} (`apt-get install -y {CJK_FONT_PACKAGE}`, or `bash scripts/system-deps.sh` "
            "as root). No other CJK font is used: the expected OCR output depends on the glyphs."
        )
    return CJK_FONT_FILE


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
