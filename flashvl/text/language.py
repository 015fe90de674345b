"""Which language to answer in: the question's own, Chinese or English."""

from __future__ import annotations

import re
from typing import Literal

Lang = Literal["zh", "en"]
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def detect_language(text: str | None, default: Lang = "en") -> Lang:
    """'zh' when the text holds Chinese characters, else 'en' (or ``default`` for no text)."""
    if not text or not text.strip():
        return default
    return "zh" if _CJK.search(text) else "en"
