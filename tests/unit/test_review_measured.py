"""How well ``needs_review`` separates right from wrong cascade answers, measured on a labelled set
(``flashvl/pipeline/data/review_answers.jsonl``: zh and en, photos and documents, each answer marked
right or wrong, with the observations the offline pipeline would report).

On the old code the checks were upside down for documents: a correct answer naming a person read
from the text was flagged ("no person detected"), and a total from the wrong menu line or a value
from the wrong column was not. Its figures on this set: precision 0.63, recall 0.45 (all 90);
0.67, 0.47 (dev); 0.50, 0.38 (held out). The held-out 18 were written after the checks; measured
first at precision 0.83, recall 0.62, they showed two general gaps (a plural "pizzas" against
"Pizza" in the text; "fee" not taken for a quantity), fixed since, so they are no longer unseen.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashvl.pipeline.arbitration import DATA, Arbiter, needs_review

SET = DATA / "review_answers.jsonl"
# Floors. A flagged right answer costs a reviewer's time, a missed wrong one reaches the user.
# Precision 0.9: at most one flag in ten is needless (old code: 0.67). Recall 0.8 over the whole set
# (old code: 0.45): the misses left are claims no check can see from the observations (a wrong
# colour of a detected cat, "football" and "astronauts" outside the detector's vocabulary, the
# one-character 马, a table cell asked without a quantity word).
PRECISION = 0.9
RECALL = 0.8


def rows() -> list[dict]:
    return [json.loads(line) for line in Path(SET).read_text().splitlines() if line.strip()]


def flagged(arbiter: Arbiter, row: dict) -> bool:
    conflicts = arbiter.check(row["observations"], row["description"], row["answer"], row["question"], similarity=False)
    return needs_review(conflicts)


def scores(items: list[dict], arbiter: Arbiter) -> tuple[float, float, int]:
    tp = sum(flagged(arbiter, r) and not r["correct"] for r in items)
    fp = sum(flagged(arbiter, r) and r["correct"] for r in items)
    wrong = sum(not r["correct"] for r in items)
    return tp / max(1, tp + fp), tp / wrong, len(items)


def test_needs_review_precision_and_recall_on_labelled_answers() -> None:
    items, arbiter = rows(), Arbiter(threshold=0.0)
    assert {r["lang"] for r in items} == {"zh", "en"} and {r["correct"] for r in items} == {True, False}
    for name, part in (
        ("dev", [r for r in items if r.get("split", "dev") == "dev"]),
        ("held out", [r for r in items if r.get("split") == "heldout"]),
        ("zh", [r for r in items if r["lang"] == "zh"]),
        ("en", [r for r in items if r["lang"] == "en"]),
        ("documents", [r for r in items if r["observations"]["text"]["lines"]]),
        ("photos", [r for r in items if not r["observations"]["text"]["lines"]]),
        ("all", items),
    ):
        precision, recall, n = scores(part, arbiter)
        print(f"needs_review on {name:9} ({n:2} answers): precision {precision:.2f}, recall {recall:.2f}")
    precision, recall, _ = scores(items, arbiter)
    assert precision >= PRECISION and recall >= RECALL


@pytest.mark.parametrize(
    ("lines", "answer", "question"),
    [
        (["Bill to: Zhang Wei", "Total 14.00"], "The customer is a man named Zhang Wei.", "Who is the customer?"),
        (["This is to certify that Ms. Li Na"], "It is for a woman named Li Na.", "Who is this for?"),
        (["收款人:李娜", "交款人:王芳"], "收款人是李娜,这两个人的名字都写在收据上。", "收款人是谁?"),
    ],
)
def test_names_read_by_ocr_are_not_missing_people(lines: list[str], answer: str, question: str) -> None:
    observations = {"objects": [], "text": {"lines": [{"text": t} for t in lines]}}
    description = "Text in the image (OCR):\n" + "\n".join(lines)
    assert Arbiter(threshold=0.0).check(observations, description, answer, question, similarity=False) == []


def test_a_person_the_text_does_not_name_is_still_flagged() -> None:
    observations = {"objects": [], "text": {"lines": [{"text": "房屋租赁合同"}, {"text": "出租方:陈明"}]}}
    conflicts = Arbiter(threshold=0.0).check(
        observations, "", "合同由一位穿西装的男人签署。", "谁签的?", similarity=False
    )
    assert [c.kind for c in conflicts] == ["named_object"]


def test_numbers_from_the_wrong_line_or_column_are_flagged() -> None:
    table = {
        "objects": [],
        "text": {"lines": [{"text": t} for t in ["姓名 语文 数学 英语", "张三 85 90 78", "李四 72 88 95"]]},
    }
    check = Arbiter(threshold=0.0).check
    assert [c.kind for c in check(table, "", "李四的数学成绩是72分。", "李四的数学成绩是多少?", similarity=False)] == [
        "text_number"
    ]
    assert check(table, "", "李四的数学成绩是88分。", "李四的数学成绩是多少?", similarity=False) == []
    menu = {"objects": [], "text": {"lines": [{"text": t} for t in ["Latte 4.50", "Mocha 5.00"]]}}
    assert check(menu, "", "Three lattes cost 13.50.", "How much do 3 lattes cost?", similarity=False) == []
    assert [
        c.kind for c in check(menu, "", "Three lattes cost 15.00.", "How much do 3 lattes cost?", similarity=False)
    ] == ["text_number"]
