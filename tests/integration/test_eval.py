"""The evaluation runner: strict scoring on its own, and a real run on a subset with the real models."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest

from flashvl.config import load_settings
from flashvl.eval.render import image_for
from flashvl.eval.runner import (
    KINDS,
    EvalItem,
    _check_data_dependencies,
    load_items,
    run_eval,
    score_answer,
    select_items,
)

# Two of each kind; rules answer the safety and the eye-colour questions, the rest go through the cascade.
SUBSET = [
    "p-astronaut-safety-en",
    "p-chelsea-animal-zh",
    "d-invoice-number-en",
    "d-lab-wbc-high-zh",
    "r-lab-abnormal-zh",
    "r-rocket-date-en",
    "t-prices-min-en",  # a table query (the exact tool)
    "t-code-error-en",  # a code check
    "u-astronaut-eyes-en",  # nobody measured eyes: the not-observed rule
    "u-cat-eyes-two-parts-en",  # one part for the cascade, one nobody measured
]


def _item(item_id: str) -> EvalItem:
    return next(item for item in load_items() if item.id == item_id)


# ------------------------------------------------------------------ scoring (no models)


def test_wrong_answer_fails_and_right_answer_passes() -> None:
    item = _item("d-lab-wbc-high-zh")  # WBC 15.2 against 4.0-10.0: high
    right = score_answer("白细胞 WBC 15.2 ×10^9/L,高于参考范围 4.0-10.0,偏高。", item.expect, item.reject)
    assert right.passed and right.matched and not right.rejected
    wrong = score_answer("白细胞结果正常。", item.expect, item.reject)
    assert not wrong.passed
    # Says "high" but also claims it is within the range: the reject pattern makes it fail.
    mixed = score_answer("白细胞 15.2 偏高,但在参考范围内。", item.expect, item.reject)
    assert mixed.matched and mixed.rejected and not mixed.passed


def test_scoring_is_case_insensitive_and_needs_an_expect_match() -> None:
    assert score_answer("The invoice number is inv-2024-0387.", [r"INV-?2024-?0387"]).passed
    assert not score_answer("I cannot read it.", [r"INV-?2024-?0387"]).passed
    hallucination = _item("r-rocket-date-en")
    verdict = score_answer(
        "I cannot tell for sure, but it launched on March 1, 2013.",
        hallucination.expect,
        hallucination.reject,
    )
    assert verdict.matched and not verdict.passed


def test_items_are_well_formed_and_their_images_resolve() -> None:
    items = load_items()
    assert len(items) >= 30
    assert {item.kind for item in items} == set(KINDS)
    assert any(re.search(r"[\u4e00-\u9fff]", item.question) for item in items)
    assert any(not re.search(r"[\u4e00-\u9fff]", item.question) for item in items)
    for reference in sorted({item.image for item in items}):
        image = image_for(reference)
        assert image.mode == "RGB" and image.width > 100 and image.height > 100, reference


def test_select_items_refuses_unknown_ids() -> None:
    items = load_items()
    assert [item.id for item in select_items(items, ids=SUBSET)] == SUBSET  # in the set's order
    assert len(select_items(items, limit=3)) == 3
    with pytest.raises(ValueError, match="no-such-item"):
        select_items(items, ids=["no-such-item"])


def test_missing_scikit_image_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)  # makes `import skimage` raise ImportError
    with pytest.raises(RuntimeError, match=r"pip install 'flashvl\[dev\]'"):
        _check_data_dependencies(select_items(load_items(), ids=["p-chelsea-animal-zh"]))


# ------------------------------------------------------------------ a real run


@pytest.mark.slow
def test_run_eval_on_a_subset_reports_a_strict_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.jsonl"
    settings = load_settings({"max_tokens": 64})
    code = asyncio.run(run_eval(settings, out, ids=SUBSET))
    printed = capsys.readouterr().out
    assert code == 0

    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in rows] == SUBSET
    items = {item.id: item for item in load_items()}
    for row in rows:
        assert row["error"] is None, row
        assert row["route"] in ("rule", "direct", "cascade", "vision-only"), row
        assert row["answer"].strip(), row
        # The recorded verdict is exactly the strict scoring of the recorded answer.
        item = items[row["id"]]
        assert row["passed"] == score_answer(row["answer"], item.expect, item.reject).passed
        assert re.search(
            rf"^{re.escape(row['id'])}\s+{row['kind']}\s+{row['route']}\s+(PASS|FAIL)\b",
            printed,
            re.MULTILINE,
        )

    passed = sum(row["passed"] for row in rows)
    total_line = re.search(r"^strict score: (\d+)/(\d+) \((\d+\.\d)%\)", printed, re.MULTILINE)
    assert total_line, printed
    assert (int(total_line[1]), int(total_line[2])) == (passed, len(SUBSET))
    assert float(total_line[3]) == round(100 * passed / len(SUBSET), 1)
    for kind in [k for k in KINDS if any(items[i].kind == k for i in SUBSET)]:  # the kinds in the subset
        assert re.search(rf"^{kind}\s+\d+/2 \(.*right \d+ / declined \d+ / wrong \d+$", printed, re.MULTILINE), kind
