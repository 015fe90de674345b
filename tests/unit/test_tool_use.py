"""The cascade's tool use without the models: when tools run, how the table query and the code's
indentation are read from OCR boxes, and the check that the answer states the exact results."""

from __future__ import annotations

import asyncio

from flashvl.pipeline import tool_use
from flashvl.stages.base import ChatMessage
from flashvl.tools import ToolCall, run_tool

ROWS = [["品名", "单价(元/斤)", "库存(斤)"], ["苹果", "6.50", "120"], ["香蕉", "3.20", "85"], ["葡萄", "12.80", "40"]]


def _line(text: str, x: float, y: float, char: float = 14.0) -> dict:
    return {"text": text, "score": 0.99, "box": [x, y, x + char * len(text), y + 20]}


def test_table_query_read_from_the_question() -> None:
    assert tool_use.table_query("哪种水果单价最高?", ROWS) == {"operation": "max", "column": "单价(元/斤)"}
    assert tool_use.table_query("库存一共多少斤?", ROWS) == {"operation": "sum", "column": "库存(斤)"}
    assert tool_use.table_query("香蕉的单价是多少?", ROWS) == {
        "operation": "lookup",
        "column": "单价(元/斤)",
        "row": "香蕉",
    }
    assert tool_use.table_query("这是什么水果店?", ROWS) is None
    assert tool_use.table_query("苹果的产地是哪里?", ROWS) == {"operation": "lookup", "column": "产地", "row": "苹果"}


def test_code_text_restores_indentation_from_boxes() -> None:
    observations = {
        "text": {
            "lines": [
                _line("def f(values):", 36, 10),
                _line("total = 0", 66, 40),
                _line("for v in values:", 66, 70),
                _line("total += v", 96, 100),
                _line("return total", 66, 130),
            ]
        }
    }
    assert tool_use.code_text(observations) == (
        "def f(values):\n    total = 0\n    for v in values:\n        total += v\n    return total"
    )


def test_the_answer_must_state_the_exact_results() -> None:
    calc = asyncio.run(run_tool("calculate", {"expression": "100 - 71.50"}))
    assert tool_use.agrees("You get 28.50 back.", [calc])
    assert not tool_use.agrees("You get 29 dollars back.", [calc])
    assert tool_use.tool_answer([calc], "en") == "100 - 71.50 = 28.5 (exact calculation)."
    top = asyncio.run(run_tool("table", {"operation": "max", "column": "单价"}, table=ROWS))
    assert tool_use.agrees("葡萄最贵,12.80元/斤。", [top]) and not tool_use.agrees("苹果最贵,6.50元。", [top])
    assert "葡萄" in (tool_use.tool_answer([top], "zh") or "")
    missing = asyncio.run(run_tool("table", {"operation": "lookup", "column": "产地", "row": "苹果"}, table=ROWS))
    said = tool_use.tool_answer([missing], "zh") or ""
    assert not tool_use.agrees("苹果产自山东。", [missing]) and "未观察到" in said and "单价(元/斤)" in said
    solved = asyncio.run(run_tool("solve", {"problem": "3x + 5 = 20", "lang": "zh"}))
    assert tool_use.agrees("x = 5", [solved]) and not tool_use.agrees("无法从图片判断", [solved])


def test_results_go_just_before_the_question() -> None:
    message = ChatMessage("user", "Text read from the image (OCR):\nTotal: 71.50\n\nQuestion: change from 100?")
    out = tool_use.with_results(message, "Tool results: 28.5", "change from 100?", "en")
    assert out.content.endswith("Tool results: 28.5\n\nQuestion: change from 100?")
    assert out.content.startswith("Text read from the image (OCR):\nTotal: 71.50")


def test_gates_keep_plain_questions_tool_free() -> None:
    assert tool_use.SOLVE_Q.search("请帮我解第1题") and tool_use.SOLVE_Q.search("Please solve it.")
    assert tool_use.MATH_Q.search("What is the total of this receipt?")
    assert not tool_use.MATH_Q.search("What is the invoice number?")
    assert tool_use._expression("100 - 71.50") == "100 - 71.50"
    assert tool_use.change_order("71.50 - 100.00") == "100.00 - 71.50"
    assert tool_use.change_order("100 - 71.50") == "100 - 71.50" and tool_use.change_order("1 + 2") == "1 + 2"
    assert tool_use._expression("NONE") is None and tool_use._expression("The answer is 5") is None
    assert isinstance(tool_use.describe_results([ToolCall("calculate", {}, None, 0.0, "bad")], "en"), str)
