"""The cascade's tool use: exact results the language stage answers from, instead of computing.

A question gets tools only when it asks for something they do exactly (arithmetic, an equation,
a table query, a code check) and the image holds what they need (numbers, an equation, code, a
table). Otherwise nothing here runs and the cascade is unchanged (same prompt, no extra call).

How a tool is chosen (measured on the 1.5B offline brain, see README "Tools"):
- an equation on the page and a question that asks to solve it: ``solve``, no model call;
- Python on the page and a question about errors: ``check_code``, no model call;
- arithmetic or a table query: the language stage writes a plan under a JSON schema (llama.cpp's
  grammar-constrained output: the plan always parses, the tool name is always one of ours), the
  tool runs, and the answer call gets the exact results after the observations.
At most ``MAX_CALLS`` tools per answer; each call is returned (``Answer.tools``).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from flashvl.pipeline.guarded import GuardedLanguage
from flashvl.pipeline.types import StageRecord
from flashvl.stages.base import ChatMessage, ChatRequest
from flashvl.text.layout import TextLine
from flashvl.text.table import rebuild_table
from flashvl.tools import OPERATIONS, ToolCall, find_problem, looks_like_python, run_tool

MAX_CALLS = 3
PLAN_MAX_TOKENS = 96

SOLVE_Q = re.compile(
    r"\bsolve\b|\bequation\b|\bfind [a-z]\b|\bwhat is [a-z]\b|\bvalue of [a-z]\b|解方程|解题|求解|解出|解一下|"
    r"这道题|拍题|怎么做|怎么解|求\s*[a-zA-Z]|[a-zA-Z]\s*(等于|是)多少",
    re.IGNORECASE,
)
CODE_Q = re.compile(
    r"\b(bugs?|errors?|wrong|fix|crash\w*|exceptions?|mistakes?|faults?|run|work)\b|错误|报错|问题|bug|能运行|能不能运行|哪里错|有错",
    re.IGNORECASE,
)
MATH_Q = re.compile(
    r"\b(total|sum|add(ed)?|difference|how much|change|altogether|average|mean|max(imum)?|min(imum)?|highest|"
    r"lowest|most|least|largest|smallest|cheapest|expensive|compare|more than|less than|times|calculate|compute|"
    r"per|each)\b|合计|总共|一共|总计|总价|多少钱|找零|找回|找多少|差多少|相差|平均|最高|最低|最大|最小|最贵|最便宜|"
    r"比较|多多少|少多少|计算|算一下|加起来|单价|数量|金额",
    re.IGNORECASE,
)

PLAN_SYSTEM = (
    "You plan one exact tool call for a question about text read from an image. Tools: "
    'calculate: exact arithmetic; put the whole computation in "expression" using only numbers copied from '
    "the text, + - * / and parentheses (e.g. 100 - 71.50, or 4 * 350.00 + 2 * 88.00). "
    'table: a query over the table; "operation" is one of lookup, compare, max, min, sum, average; "column" is '
    'a header cell copied exactly; "row" (and "other_row" for compare) are first-column cells copied exactly. '
    'none: the question needs no arithmetic or table query. Unused fields are "". Answer with the JSON only.'
)
PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tool": {"type": "string", "enum": ["calculate", "table", "none"]},
        "expression": {"type": "string", "maxLength": 120},
        "operation": {"type": "string", "enum": [*OPERATIONS, "none"]},
        "column": {"type": "string", "maxLength": 40},
        "row": {"type": "string", "maxLength": 40},
        "other_row": {"type": "string", "maxLength": 40},
    },
    "required": ["tool", "expression", "operation", "column", "row", "other_row"],
}


def _lines(observations: dict[str, Any]) -> list[TextLine]:
    return [
        TextLine(line["text"], float(line["score"]), tuple(float(v) for v in line["box"]))  # type: ignore[arg-type]
        for line in ((observations.get("text") or {}).get("lines") or [])
        if "box" in line and "score" in line
    ]


def code_text(observations: dict[str, Any]) -> str:
    """OCR lines with their indentation back (from each line's left edge and the text's character width)."""
    lines = _lines(observations)
    if not lines:
        return ""
    widths = [(ln.box[2] - ln.box[0]) / max(len(ln.text), 1) for ln in lines if len(ln.text) >= 4]
    char = sorted(widths)[len(widths) // 2] if widths else 10.0
    left = min(ln.box[0] for ln in lines)
    out = []
    for ln in sorted(lines, key=lambda ln: (ln.box[1], ln.box[0])):
        spaces = round((ln.box[0] - left) / max(char, 1e-6))
        spaces = 4 * round(spaces / 4) if spaces >= 2 else 0
        out.append(" " * spaces + ln.text)
    return "\n".join(out)


def _plan_call(plan: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    tool = plan.get("tool")
    if tool == "calculate" and str(plan.get("expression", "")).strip():
        return "calculate", {"expression": str(plan["expression"]).strip()}
    if tool == "table" and plan.get("operation") in OPERATIONS:
        args = {k: str(plan.get(k, "")).strip() for k in ("operation", "column", "row", "other_row")}
        return "table", {k: v for k, v in args.items() if v}
    return None


def describe_results(calls: list[ToolCall], lang: str) -> str:
    """The tool results as the language stage reads them (after the observations, before the question)."""
    head = (
        "工具结果(精确,回答时直接使用这些数值,不要自己重新计算):"
        if lang == "zh"
        else ("Tool results (exact: use these values in the answer, do not recompute):")
    )
    lines = [head]
    for call in calls:
        args = ", ".join(f"{k}={v!r}" for k, v in call.arguments.items() if k not in {"code", "lang"})
        if call.error is not None:
            lines.append(f"- {call.name}({args}): failed: {call.error}")
            continue
        result = call.result or {}
        if call.name == "calculate":
            lines.append(f"- {result.get('expression')} = {result.get('display')}")
        elif call.name == "solve":
            steps = "; ".join(result.get("steps", []))
            sols = ", ".join(result.get("solutions", [])) or ("无解" if lang == "zh" else "no solution")
            lines.append(
                f"- solve {result.get('problem')}: {sols}. " + ("步骤:" if lang == "zh" else "Steps: ") + steps
            )
        elif call.name == "check_code":
            findings = result.get("findings", [])
            if not findings:
                lines.append("- check_code: " + ("没有发现错误" if lang == "zh" else "no problems found"))
            for f in findings:
                lines.append(f"- check_code line {f['line']}: {f['kind']}: {f['message']}")
        elif not result.get("observed", True):
            cols = ", ".join(result.get("columns", []))
            lines.append(
                f"- table({args}): NOT OBSERVED: {result.get('not_observed')}; "
                + (f"表格里的列是:{cols}" if lang == "zh" else f"the table's columns are: {cols}")
            )
        else:
            used = "; ".join(f"{c['row']} / {c['column']} = {c['value']}" for c in result.get("cells", []))
            extra = {k: result[k] for k in ("value", "rows", "difference", "larger") if k in result}
            lines.append(f"- table({args}): {json.dumps(extra, ensure_ascii=False)} (cells: {used})")
    return "\n".join(lines)


def with_results(message: ChatMessage, results: str, question: str, lang: str) -> ChatMessage:
    """The user message with the tool results just before its question line (or at its end)."""
    question_line = f"问题:{question}" if lang == "zh" else f"Question: {question}"
    content = message.content
    if content.endswith(question_line):
        content = f"{content[: -len(question_line)].rstrip()}\n\n{results}\n\n{question_line}"
    else:
        content = f"{content}\n\n{results}"
    return ChatMessage(message.role, content)


async def use_tools(
    language: GuardedLanguage,
    question: str,
    observations: dict[str, Any],
    ocr_text: str,
    lang: str,
    *,
    timeout: float = 3.0,
) -> tuple[list[ToolCall], StageRecord | None]:
    """The tool calls for this question (maybe none) and the plan call's record (None when no plan call)."""
    lines = _lines(observations)
    table = rebuild_table(lines) if lines else None
    rows = table.rows if table is not None else None
    calls: list[ToolCall] = []
    if SOLVE_Q.search(question):
        problem = find_problem(ocr_text) or find_problem(question)
        if problem:
            calls.append(await run_tool("solve", {"problem": problem, "lang": lang}, timeout=timeout))
            return calls, None
    if CODE_Q.search(question) and looks_like_python(ocr_text):
        calls.append(await run_tool("check_code", {"code": code_text(observations)}, timeout=timeout))
        return calls, None
    if not (MATH_Q.search(question) and re.search(r"\d", ocr_text)):
        return calls, None
    text = ocr_text
    if table is not None:
        text += "\n\nTable (rebuilt from the text):\n" + table.to_markdown()
    request = ChatRequest(
        messages=[
            ChatMessage("system", PLAN_SYSTEM),
            ChatMessage("user", f"Text:\n{text}\n\nQuestion: {question}"),
        ],
        max_tokens=PLAN_MAX_TOKENS,
        temperature=0.0,
        json_schema=PLAN_SCHEMA,
        logprobs=False,
    )
    start = time.perf_counter()
    try:
        generation = await language.generate(request)
    except Exception:  # the plan is an optimisation: without it the cascade answers as before
        return calls, StageRecord("language-plan", language.name, time.perf_counter() - start)
    record = StageRecord(
        "language-plan",
        language.name,
        time.perf_counter() - start,
        steps=generation.timings.steps | {f"{k}_tokens": v for k, v in generation.timings.tokens.items()},
    )
    try:
        plan = json.loads(generation.text)
    except json.JSONDecodeError:
        return calls, record
    chosen = _plan_call(plan) if isinstance(plan, dict) else None
    if chosen is not None and len(calls) < MAX_CALLS:
        calls.append(await run_tool(chosen[0], chosen[1], table=rows, timeout=timeout))
    return calls, record
