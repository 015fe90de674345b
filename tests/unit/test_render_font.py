"""The OCR tests render Chinese with one font file, installed by name, and fail loudly without it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import render

ROOT = Path(__file__).resolve().parents[2]


def test_chinese_is_rendered_with_the_one_pinned_font_file() -> None:
    if not Path(render.CJK_FONT_FILE).is_file():
        pytest.fail(f"{render.CJK_FONT_FILE} is missing: apt-get install -y {render.CJK_FONT_PACKAGE}")
    assert render.cjk_font_path() == render.CJK_FONT_FILE
    assert render.CJK_FONT_FILE.endswith("wqy-microhei.ttc") and render.CJK_FONT_PACKAGE == "fonts-wqy-microhei"


def test_a_missing_font_file_fails_with_the_package_name_instead_of_using_another_font(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    render.cjk_font_path.cache_clear()
    monkeypatch.setattr(render, "CJK_FONT_FILE", str(tmp_path / "wqy-microhei.ttc"))
    try:
        with pytest.raises(FileNotFoundError, match="fonts-wqy-microhei") as raised:
            render.render_text(["发票号码 12345"])
        assert str(tmp_path / "wqy-microhei.ttc") in str(raised.value)
    finally:
        render.cjk_font_path.cache_clear()


def test_system_deps_installs_that_package_when_that_file_is_missing() -> None:
    script = (ROOT / "scripts" / "system-deps.sh").read_text()
    check = re.search(r"\[ -f (\S+) \] \|\| need\+=\((\S+)\)", script)
    assert check is not None, "system-deps.sh must check for the font FILE, not for any Chinese font"
    assert (check.group(1), check.group(2)) == (render.CJK_FONT_FILE, render.CJK_FONT_PACKAGE)
    assert ":lang=zh" not in script
