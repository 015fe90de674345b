"""Images for the evaluation set, made by code: rendered documents and synthetic shapes.

Documents are drawn with PIL in a CJK-capable font found on the machine
(``fc-list :lang=zh file``); Debian's ``fonts-noto-cjk`` or ``fonts-wqy-microhei``
provide one. Photos come from scikit-image's sample data (``flashvl[dev]``).
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
FONT_HINT = "install a CJK font, e.g. `apt-get install -y fonts-noto-cjk` (Debian/Ubuntu)"

# ------------------------------------------------------------------ fonts


@cache
def cjk_font_path() -> str:
    """The first font ``fc-list`` reports for Chinese; raises with the install hint when none."""
    try:
        listed = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise FileNotFoundError(f"cannot run fc-list to find a CJK font ({exc}); {FONT_HINT}") from exc
    for line in sorted(listed.splitlines()):  # sorted: the same font on every run
        path = line.split(":")[0].strip()
        if path and Path(path).is_file():
            return path
    raise FileNotFoundError(f"no font with Chinese glyphs found by `fc-list :lang=zh`; {FONT_HINT}")


# ------------------------------------------------------------------ documents


def render_document(
    lines: list[str],
    *,
    font_size: int = 26,
    title_size: int | None = 34,
    margin: int = 36,
    line_gap: float = 0.7,
    min_width: int = 640,
) -> Image.Image:
    """Black text on white, one line per entry; the first line is a title when ``title_size`` is set."""
    font_path = cjk_font_path()
    body = ImageFont.truetype(font_path, font_size)
    title = ImageFont.truetype(font_path, title_size) if title_size else body
    fonts = [title if index == 0 else body for index in range(len(lines))]
    steps = [int(font.size * (1.0 + line_gap)) for font in fonts]
    text_width = max((int(font.getlength(line)) for font, line in zip(fonts, lines, strict=True)), default=0)
    size = (max(min_width, text_width + 2 * margin), 2 * margin + sum(steps))
    image = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(image)
    y = margin
    for font, step, line in zip(fonts, steps, lines, strict=True):
        draw.text((margin, y), line, font=font, fill=BLACK)
        y += step
    return image


DOCUMENTS: dict[str, list[str]] = {
    "invoice_en": [
        "INVOICE",
        "Invoice No: INV-2024-0387",
        "Date: 2024-03-15",
        "Bill to: Northwind Traders",
        "Item          Qty   Unit price   Amount",
        "Widget A       2       12.50      25.00",
        "Widget B       1       40.00      40.00",
        "Subtotal: 65.00",
        "Tax (10%): 6.50",
        "Total: USD 71.50",
    ],
    "invoice_zh": [
        "增值税普通发票",
        "发票号码:No. 04417729",
        "开票日期:2023年11月08日",
        "购买方:上海明远科技有限公司",
        "货物名称    数量    单价     金额",
        "办公椅       4     350.00   1400.00",
        "台灯         2      88.00    176.00",
        "合计金额:¥1576.00",
        "价税合计(大写):壹仟伍佰柒拾陆元整",
    ],
    "lab_zh": [
        "检验报告单",
        "姓名:张某   性别:男   年龄:45",
        "项目            结果    单位       参考范围",
        "白细胞 WBC      15.2    10^9/L     4.0-10.0",
        "血红蛋白 HGB    138     g/L        130-175",
        "血小板 PLT      210     10^9/L     125-350",
        "报告日期:2024-05-20",
    ],
    # Tool scenarios (issue 15): a school exercise, a bill to add up, a price table, code with faults.
    "exercise_zh": [
        "数学练习",
        "第1题 解方程:",
        "3x + 5 = 20",
        "第2题 计算:12 × 4 + 6",
    ],
    "exercise_en": [
        "Homework",
        "Solve for x:",
        "x^2 - 5x + 6 = 0",
    ],
    "bill_en": [
        "CAFE RECEIPT",
        "Coffee         3.80",
        "Sandwich       6.45",
        "Muffin         2.95",
        "Juice          4.10",
        "Thank you!",
    ],
    "prices_zh": [
        "水果价格表",
        "品名      单价(元/斤)   库存(斤)",
        "苹果        6.50          120",
        "香蕉        3.20          85",
        "葡萄        12.80         40",
        "橙子        5.60          96",
    ],
    "code_py": [
        "def average(values):",
        "    total = 0",
        "    for v in values:",
        "        total += v",
        "    return total / len(value)",
        "print(average([1, 2, 3]) / 0)",
    ],
}


# ------------------------------------------------------------------ synthetic shapes


def _canvas(width: int = 400, height: int = 300) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (width, height), WHITE)
    return image, ImageDraw.Draw(image)


def _red_square_center() -> Image.Image:
    image, draw = _canvas()
    draw.rectangle((140, 90, 260, 210), fill=(220, 20, 20))
    return image


def _red_square_top_left() -> Image.Image:
    image, draw = _canvas()
    draw.rectangle((20, 20, 110, 110), fill=(220, 20, 20))
    return image


def _blue_circle() -> Image.Image:
    image, draw = _canvas()
    draw.ellipse((130, 80, 270, 220), fill=(20, 60, 220))
    return image


def _three_green_circles() -> Image.Image:
    image, draw = _canvas()
    for left in (40, 165, 290):
        draw.ellipse((left, 110, left + 70, 180), fill=(20, 170, 40))
    return image


SHAPES = {
    "red_square": _red_square_center,
    "red_square_top_left": _red_square_top_left,
    "blue_circle": _blue_circle,
    "three_green_circles": _three_green_circles,
}


# ------------------------------------------------------------------ photos and references


def skimage_photo(name: str) -> Image.Image:
    """A scikit-image sample photo as RGB (grey and boolean images expanded)."""
    try:
        from skimage import data
    except ImportError as exc:
        raise RuntimeError(
            "the evaluation photos come from scikit-image: pip install 'flashvl[dev]' (it gives scikit-image)"
        ) from exc
    loader = getattr(data, name, None)
    if loader is None:
        raise ValueError(f"scikit-image has no sample image {name!r}")
    array = np.asarray(loader())
    if array.dtype == bool:
        array = np.where(array, 255, 0).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def image_for(reference: str) -> Image.Image:
    """Resolve an item's ``image``: ``skimage:NAME``, ``render:NAME`` or ``solid:NAME``."""
    scheme, _, name = reference.partition(":")
    if scheme == "skimage":
        return skimage_photo(name)
    if scheme == "render":
        if name not in DOCUMENTS:
            raise ValueError(f"unknown document {name!r}; known: {sorted(DOCUMENTS)}")
        return render_document(DOCUMENTS[name])
    if scheme == "solid":
        if name not in SHAPES:
            raise ValueError(f"unknown shape scene {name!r}; known: {sorted(SHAPES)}")
        return SHAPES[name]()
    raise ValueError(f"unknown image reference {reference!r} (use skimage:, render: or solid:)")
