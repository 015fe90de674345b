"""The regression set's bookkeeping: right / declined / wrong per category, baselines, and --compare."""

from __future__ import annotations

from flashvl.eval.runner import DECLINED, ItemResult, compare, format_report, load_items, select_items, summarise


def _result(item_id: str, kind: str, outcome: str, answer: str = "a", seconds: float = 1.0) -> ItemResult:
    return ItemResult(item_id, kind, "q", answer, "cascade", outcome == "right", seconds, [], [], outcome=outcome)  # type: ignore[arg-type]


def test_kinds_select_items_and_the_set_has_tool_and_unobserved_items() -> None:
    items = load_items()
    chosen = select_items(items, ids=["tools", "unobserved"])
    assert {i.kind for i in chosen} == {"tools", "unobserved"} and len(chosen) >= 10
    assert DECLINED.search("Cannot tell from the image.") and DECLINED.search("未观察到:列 '产地'")
    assert not DECLINED.search("The total is 17.30.")


def test_compare_flags_a_regression_and_lists_flips() -> None:
    before = summarise([_result("a", "tools", "right"), _result("b", "tools", "wrong")], {"language_stage": "old"})
    same = summarise([_result("a", "tools", "right"), _result("b", "tools", "declined")], {"language_stage": "new"})
    text, regressed = compare(before, same)
    assert not regressed and "flipped b: wrong -> declined" in text
    worse = summarise([_result("a", "tools", "wrong"), _result("b", "tools", "wrong")], {"language_stage": "new"})
    text, regressed = compare(before, worse)
    assert regressed and "REGRESSED" in text and "flipped a: right -> wrong" in text
    other = summarise([_result("c", "unobserved", "wrong")], {})
    text, regressed = compare(before, other)
    assert not regressed and "unobserved only in the current run" in text and "tools      only in the baseline" in text
    assert "right 1 / declined 0 / wrong 1" in format_report(
        [_result("a", "tools", "right"), _result("b", "tools", "wrong")]
    )
