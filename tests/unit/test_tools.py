"""The language stage's exact tools (flashvl/tools/): decimal arithmetic with units, sympy equations with
steps in both languages, table queries with the cells used and "not observed", Python checks without
running the code, and the bounds that keep them safe."""

from __future__ import annotations

import asyncio

import pytest

from flashvl.tools import TOOL_NAMES, TOOL_SPECS, run_tool
from flashvl.tools.calculator import CalcError, calculate
from flashvl.tools.code import check_python, looks_like_python
from flashvl.tools.solver import SolveError, find_problem, solve
from flashvl.tools.table import TableError, query_table


@pytest.mark.parametrize(
    ("expression", "display"),
    [
        ("0.1 + 0.2", "0.3"),  # decimal, not float
        ("100 - 71.50", "28.5"),
        ("$100 - $71.50", "$28.50"),
        ("¥12.50 + ¥3.20 + ¥8", "¥23.70"),
        ("3.80 + 6.45 + 2.95 + 4.10", "17.3"),
        ("4 × 350.00 + 2 × 88.00", "1576"),
        ("12元 + 8元", "20元"),
        ("3.2 kg * 2", "6.4 kg"),
        ("1,576.00 - 576", "1000"),
        ("15% * 200", "30"),
        ("2^10", "1024"),
        ("(1 + 2) * 3.5", "10.5"),
        ("-5 + 2", "-3"),
    ],
)
def test_calculator_is_exact_and_keeps_units(expression: str, display: str) -> None:
    assert calculate(expression)["display"] == display


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('id')", "a + b", "1 / 0", "3 kg + 2元", "9 ** 9 ** 9", "x" * 400, "", "[1] * 10"],
)
def test_calculator_refuses_what_is_not_plain_arithmetic(expression: str) -> None:
    with pytest.raises(CalcError):
        calculate(expression)


def test_solver_linear_with_steps_in_chinese() -> None:
    out = solve("3x + 5 = 20", "zh")
    assert out["solutions"] == ["x = 5"]
    assert any("两边同除以 3" in step for step in out["steps"]) and any("检验" in step for step in out["steps"])


def test_solver_quadratic_in_english_and_bounds() -> None:
    out = solve("x^2 - 5x + 6 = 0", "en")
    assert out["solutions"] == ["x = 2", "x = 3"] and any(s.startswith("Factor") for s in out["steps"])
    assert solve("x = x + 1")["kind"] == "contradiction"
    assert solve("1/x = 4")["solutions"][0].startswith("x = 1/4")
    for bad in ("x^5 = 1", "__import__(1) = 2", "abc + x = 1", "x + y + z = 1", "x=1=2"):
        with pytest.raises(SolveError):
            solve(bad)


def test_find_problem_in_ocr_text() -> None:
    assert find_problem("数学练习\n第1题 解方程:\n3x + 5 = 20") == "3x + 5 = 20"
    assert find_problem("Total: USD 71.50") is None


ROWS = [["品名", "单价(元/斤)", "库存(斤)"], ["苹果", "6.50", "120"], ["香蕉", "3.20", "85"], ["葡萄", "12.80", "40"]]


def test_table_queries_name_the_cells_used() -> None:
    top = query_table(ROWS, "max", "单价")
    assert top["value"] == "12.8" and top["rows"] == ["葡萄"] and len(top["cells"]) == 3
    assert query_table(ROWS, "sum", "库存")["value"] == "245"
    assert query_table(ROWS, "average", "库存(斤)")["value"] == "81.666667"
    assert query_table(ROWS, "lookup", "库存", "香蕉")["value"] == "85"
    diff = query_table(ROWS, "compare", "单价", "苹果", "葡萄")
    assert diff["difference"] == "-6.3" and diff["larger"] == "葡萄"


def test_table_says_what_was_not_observed() -> None:
    out = query_table(ROWS, "lookup", "产地", "苹果")
    assert out["observed"] is False and "产地" in out["not_observed"] and out["columns"] == ROWS[0]
    assert query_table(ROWS, "lookup", "单价", "西瓜")["observed"] is False
    with pytest.raises(TableError):
        query_table(ROWS, "median", "单价")


def test_code_check_finds_faults_without_running_the_code() -> None:
    code = "import os\ndef f(values):\n    return sum(values) / len(value)\nprint(f([1]) / 0)\n"
    out = check_python(code)
    kinds = {(f["line"], f["kind"]) for f in out["findings"]}
    assert out["ok"] is False and (3, "undefined-name") in kinds and (4, "zero-division") in kinds
    syntax = check_python("def f(x)\n    return x\n")
    assert syntax["findings"][0]["kind"] == "syntax-error" and syntax["findings"][0]["line"] == 1
    assert check_python("print(1 + 1)\n")["ok"] is True
    assert looks_like_python(code) and not looks_like_python("Total: 71.50\nThank you")


def test_run_tool_returns_errors_and_specs_match() -> None:
    assert TOOL_NAMES == ("calculate", "solve", "table", "check_code")
    assert all(spec["type"] == "function" for spec in TOOL_SPECS)
    ok = asyncio.run(run_tool("calculate", {"expression": "2 + 2"}))
    assert ok.result is not None and ok.result["display"] == "4" and ok.error is None and ok.seconds >= 0
    bad = asyncio.run(run_tool("calculate", {"expression": "open('x')"}))
    assert bad.result is None and bad.error
    assert asyncio.run(run_tool("nope", {})).error
    no_table = asyncio.run(run_tool("table", {"operation": "max", "column": "x"}))
    assert no_table.result == {"observed": False, "not_observed": "no table was read from the image"}
    assert set(ok.to_dict()) == {"name", "arguments", "result", "seconds"}
