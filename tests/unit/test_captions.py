"""Offline captions are full sentences in the request's language, built from the observations.

On the old code they were fragments: "mostly blue."; "containing text, mostly white.";
"An image that likely shows envelope, with tv detected, mostly blue."
"""

from __future__ import annotations

import re

import pytest

from flashvl.stages.base import Box
from flashvl.stages.offline.colours import NamedColour
from flashvl.stages.offline.describe import caption
from flashvl.stages.offline.scene import Observations, place_objects

ZH = {"cat": "猫", "tv": "电视", "person": "人", "laptop": "笔记本电脑"}
BLUE = NamedColour("blue", "蓝色", (0, 0, 255), 0.8)
WHITE = NamedColour("white", "白色", (255, 255, 255), 0.9)
ARTICLE_OR_NUMBER = r"\b(a|an|two|three|four|five|six|seven|eight|nine|ten)"


def obs(
    boxes: list[Box], labels: list[dict] | None = None, lines: list[str] | None = None, **kw: object
) -> Observations:
    o = Observations(width=300, height=200, background=kw.get("bg", BLUE), foreground=kw.get("fg", BLUE))  # type: ignore[arg-type]
    o.objects = place_objects(boxes, 300, 200, ZH)
    o.labels = labels or []
    o.text_lines = [{"text": t, "score": 0.9, "box": [0, 0, 1, 1]} for t in lines or []]
    o.text_present = bool(lines)
    return o


def sentences_en(text: str) -> list[str]:
    unquoted = re.sub(r'"[^"]*"', '"…"', text)  # quoted OCR text is not the caption's own sentences
    return [s for s in re.split(r"(?<=[.])\s+", unquoted) if s]


def assert_full_sentences_en(text: str) -> None:
    for sentence in sentences_en(text):
        assert sentence[0].isupper() and sentence.endswith("."), f"fragment: {sentence!r} in {text!r}"
        assert re.search(r"\b(is|are|has|shows|contains|reads|was)\b", sentence) or sentence.startswith(
            ("An image of", "A document")
        ), f"no verb: {sentence!r}"


ENVELOPE = [{"index": 549, "name": "envelope", "name_zh": "信封", "score": 0.55}]
CASES = [
    ("nothing", obs([])),
    ("colour only", obs([], bg=WHITE)),
    ("text, not a document", obs([], lines=["STOP"], bg=WHITE)),
    ("classifier and detector", obs([Box("tv", 0.5, 0, 0, 100, 100)], ENVELOPE)),
    (
        "two cats and a laptop",
        obs([Box("cat", 0.9, 0, 0, 90, 90), Box("cat", 0.8, 100, 0, 190, 90), Box("laptop", 0.7, 200, 100, 290, 190)]),
    ),
    ("a document", obs([], lines=["Invoice No. 2026-0042", "Item Qty Price", "Coffee 2 7.00", "Total 7.00"], bg=WHITE)),
]


@pytest.mark.parametrize(("name", "observed"), CASES, ids=[c[0] for c in CASES])
def test_english_captions_are_full_sentences_with_articles(name: str, observed: Observations) -> None:
    text = caption(observed, "en")
    print(name, "->", text)
    assert_full_sentences_en(text)
    for label in {o.label for o in observed.objects} | {x["name"] for x in observed.labels}:
        plural = label + "s"
        assert re.search(rf"{ARTICLE_OR_NUMBER} ({label}|{plural})\b", text), f"{label!r} without an article: {text!r}"
    if observed.background:
        assert observed.background.name in text


@pytest.mark.parametrize(("name", "observed"), CASES, ids=[c[0] for c in CASES])
def test_chinese_captions_are_chinese_sentences(name: str, observed: Observations) -> None:
    text = caption(observed, "zh")
    print(name, "->", text)
    assert text.endswith("。") and not re.search(r"[A-Za-z]", re.sub(r"“[^”]*”", "", text)), text
    for o in observed.objects:
        assert o.label_zh in text
    for label in observed.labels:
        assert label["name_zh"] in text
    assert all(re.search(r"[\u4e00-\u9fff]", s) for s in text.split("。") if s), text


def test_counts_and_plurals() -> None:
    two = obs([Box("cat", 0.9, 0, 0, 90, 90), Box("cat", 0.8, 100, 0, 190, 90), Box("laptop", 0.7, 200, 100, 290, 190)])
    assert "two cats and a laptop" in caption(two, "en")
    assert "两只猫和一台笔记本电脑" in caption(two, "zh")


def test_a_document_caption_quotes_its_first_line_in_its_language() -> None:
    en = obs([], lines=["Invoice No. 2026-0042", "Item Qty Price", "Coffee 2 7.00", "Total 7.00"], bg=WHITE)
    assert caption(en, "en").startswith('A document in English whose first line reads "Invoice No. 2026-0042".')
    zh = obs([], lines=["上海市第一人民医院检验报告单", "姓名 张三 性别 男", "白细胞 WBC 15.2 4.0-10.0"], bg=WHITE)
    assert caption(zh, "zh").startswith("一份中文文档,第一行写着“上海市第一人民医院检验报告单”。")
    assert caption(zh, "en").startswith('A document in Chinese whose first line reads "上海市第一人民医院检验报告单".')
