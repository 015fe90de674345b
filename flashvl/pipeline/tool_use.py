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
from decimal import Decimal, InvalidOperation
from typing import Any

from flashvl.pipeline.guarded import GuardedLanguage
from flashvl.pipeline.types import StageRecord
from flashvl.stages.base import ChatMessage, ChatRequest
from flashvl.text.layout import TextLine
from flashvl.text.table import rebuild_table
from flashvl.tools import ToolCall, find_problem, looks_like_python, run_tool

MAX_CALLS = 3

SOLVE_Q = re.compile(
    r"\bsolve\b|\bequation\b|\bfind [a-z]\b|\bwhat is [a-z]\b|\bvalue of [a-z]\b|"
    r"帮我解|请解|解第|解答|做一下|做这道|解方程|解题|求解|解出|解一下|"
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

# The calculator's plan: one line of arithmetic, plain text (no grammar: on the 1.5B brain a JSON-schema
# plan cost far more time than the expression it carried); the calculator refuses anything else.
PLAN_SYSTEM = (
    "You write one arithmetic expression that answers a question about text read from an image. Use only "
    "numbers copied from the text and + - * / ( ). Order matters: change = amount paid - total; a total is "
    "the sum of the amounts. Examples: 100 - 71.50 ; 3.80 + 6.45 + 2.95 ; 4 * 350.00 + 2 * 88.00. If no "
    "arithmetic is needed, write NONE. Write the expression only, on one line."
)
PLAN_MAX_TOKENS = 48
TABLE_OPS = (
    ("max", re.compile(r"最高|最大|最贵|最多|\b(highest|largest|biggest|most expensive|max(imum)?|most)\b", re.I)),
    ("min", re.compile(r"最低|最小|最便宜|最少|\b(lowest|smallest|cheapest|min(imum)?|least|fewest)\b", re.I)),
    ("average", re.compile(r"平均|\b(average|mean)\b", re.I)),
    ("sum", re.compile(r"合计|总共|一共|总计|总和|加起来|\b(total|sum|altogether|in all)\b", re.I)),
)


def _lines(observations: dict[str, Any]) -> list[TextLine]:
    return [
        TextLine(line["text"], float(line["score"]), tuple(float(v) for v in line["box"]))  # type: ignore[arg-type]
        for line in ((observations.get("text") or {}).get("lines") or [])
        if "box" in line and "score" in line
    ]


def code_text(observations: dict[str, Any]) -> str:
    """OCR lines with their indentation back: each distinct left edge (within half a character) is one
    level deeper, four spaces a level (OCR drops leading spaces; Python needs them)."""
    lines = sorted(_lines(observations), key=lambda ln: (ln.box[1], ln.box[0]))
    if not lines:
        return ""
    widths = [(ln.box[2] - ln.box[0]) / max(len(ln.text), 1) for ln in lines if len(ln.text) >= 4]
    tolerance = 0.5 * (sorted(widths)[len(widths) // 2] if widths else 10.0)
    edges: list[float] = []
    for x in sorted(ln.box[0] for ln in lines):
        if not edges or x - edges[-1] > tolerance:
            edges.append(x)

    def level(x: float) -> int:
        return min(range(len(edges)), key=lambda i: abs(edges[i] - x))

    return "\n".join("    " * level(ln.box[0]) + ln.text for ln in lines)


def _key(text: str) -> str:
    return re.sub(r"[\s:：()()/]", "", text).lower()


def table_query(question: str, rows: list[list[str]]) -> dict[str, str] | None:
    """A table query read from the question itself: an operation word and a header cell it names
    (``哪种水果单价最高`` -> max of ``单价(元/斤)``), or a first-column cell and a header (lookup)."""
    header, body = rows[0], rows[1:]
    asked = _key(question)

    def named(cells: list[str]) -> str | None:
        for cell in cells:
            key = _key(cell)
            core = re.sub(r"[^\w]|元|斤|kg|个", "", re.split(r"[((]", cell)[0]).lower()
            if key and (key in asked or (len(core) >= 2 and core in asked)):
                return cell
        return None

    column = named(header[1:])
    for operation, words in TABLE_OPS:
        if words.search(question) and column:
            return {"operation": operation, "column": column}
    row = named([r[0] for r in body if r])
    if row and column:
        return {"operation": "lookup", "column": column, "row": row}
    if row:  # a row and an attribute the table has no column for: the tool says it was not observed
        zh = re.search(
            re.escape(row) + r"的([\u4e00-\u9fffA-Za-z]{1,8}?)(?:是|有|为|在|多少|怎么|如何|吗|呢|？|\?)", question
        )
        en = re.search(
            r"\b(?:what|which|how)\s+(?:is|are|was)\s+the\s+([a-z ]{2,30}?)\s+of\s+(?:the\s+)?" + re.escape(row),
            question,
            re.I,
        )
        found = zh or en
        attribute = found.group(1).strip() if found is not None else None
        if attribute:
            return {"operation": "lookup", "column": attribute, "row": row}
    return None


CHANGE_Q = re.compile(r"\bchange\b|找零|找回|找多少|找我", re.IGNORECASE)
_DIFFERENCE = re.compile(r"\s*([$¥￥]?\s*\d[\d,]*(?:\.\d+)?)\s*-\s*([$¥￥]?\s*\d[\d,]*(?:\.\d+)?)\s*")


def change_order(expression: str) -> str:
    """Change is what was paid minus the total, never negative: ``71.50 - 100`` (a small model's usual
    slip) becomes ``100 - 71.50``; anything but a plain difference is left as it is."""
    match = _DIFFERENCE.fullmatch(expression)
    if match is None:
        return expression

    def value(text: str) -> float:
        return float(re.sub(r"[^\d.]", "", text))

    first, second = match.group(1), match.group(2)
    return f"{second.strip()} - {first.strip()}" if value(first) < value(second) else expression


def _expression(text: str) -> str | None:
    line = text.strip().splitlines()[0].strip().strip("`").strip() if text.strip() else ""
    line = re.sub(r"^(expression|answer|表达式)\s*[:：=]\s*", "", line, flags=re.I).rstrip("=。. ")
    if not line or line.upper().startswith("NONE") or not re.search(r"\d\s*[-+*/×÷]\s*\(?\s*[$¥￥]?\d", line):
        return None
    return line


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
    if rows is not None and (query := table_query(question, rows)) is not None:
        calls.append(await run_tool("table", query, table=rows, timeout=timeout))
        return calls, None
    if not (MATH_Q.search(question) and re.search(r"\d", ocr_text)):
        return calls, None
    request = ChatRequest(
        messages=[
            ChatMessage("system", PLAN_SYSTEM),
            ChatMessage("user", f"Text:\n{ocr_text}\n\nQuestion: {question}"),
        ],
        max_tokens=PLAN_MAX_TOKENS,
        temperature=0.0,
        stop=["\n"],
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
    expression = _expression(generation.text)
    if expression is not None and CHANGE_Q.search(question):
        expression = change_order(expression)
    if expression is not None:
        calls.append(await run_tool("calculate", {"expression": expression}, timeout=timeout))
    return calls, record


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _numbers(text: str) -> set[Decimal]:
    out = set()
    for match in _NUMBER.findall(text):
        try:
            out.add(Decimal(match.replace(",", "")).normalize())
        except InvalidOperation:
            continue
    return out


def tool_answer(calls: list[ToolCall], lang: str) -> str | None:
    """The tools' results said plainly, in the question's language (None when no call gave a result)."""
    zh = lang == "zh"
    parts = []
    for call in calls:
        r = call.result
        if r is None:
            continue
        if call.name == "calculate":
            parts.append(f"{r['expression']} = {r['display']}" + ("(精确计算)" if zh else " (exact calculation)."))
        elif call.name == "solve":
            sols = ", ".join(r.get("solutions", [])) or ("无解" if zh else "no solution")
            steps = ("；" if zh else "; ").join(r.get("steps", []))
            parts.append(f"解:{sols}。步骤:{steps}" if zh else f"Solution: {sols}. Steps: {steps}.")
        elif call.name == "check_code":
            found = r.get("findings", [])
            if not found:
                parts.append(
                    "检查未发现错误(代码没有运行)。" if zh else "The check found no errors (the code was not run)."
                )
            for f in found:
                parts.append(f"第 {f['line']} 行:{f['message']}" if zh else f"Line {f['line']}: {f['message']}.")
        elif not r.get("observed", True):
            cols = "、".join(r.get("columns", [])) if zh else ", ".join(r.get("columns", []))
            parts.append(
                f"未观察到:{r.get('not_observed')}。表格中读到的列是:{cols}。"
                if zh
                else f"Not observed: {r.get('not_observed')}. The table that was read has the columns: {cols}."
            )
        else:
            where = "、".join(r.get("rows", [])) if zh else ", ".join(r.get("rows", []))
            op = r.get("operation")
            column = r.get("column") or (r.get("cells") or [{}])[0].get("column", "")
            if op in {"max", "min"}:
                word = ("最高" if op == "max" else "最低") if zh else ("highest" if op == "max" else "lowest")
                parts.append(
                    f"{column}{word}的是{where}:{r['value']}。"
                    if zh
                    else f"The {word} {column} is {where}: {r['value']}."
                )
            elif op in {"sum", "average"}:
                word = ("合计" if op == "sum" else "平均") if zh else ("total" if op == "sum" else "average")
                parts.append(f"{column}{word}:{r['value']}。" if zh else f"The {word} of {column} is {r['value']}.")
            elif op == "compare":
                first, second = r["cells"][0], r["cells"][1]
                parts.append(
                    f"{first['row']} 与 {second['row']} 的{first['column']}相差 {r.get('difference')}。"
                    if zh
                    else f"{first['column']}: {first['row']} minus {second['row']} is {r.get('difference')}."
                )
            else:
                cell = r["cells"][0]
                parts.append(
                    f"{cell['row']}的{cell['column']}是 {cell['value']}。"
                    if zh
                    else f"{cell['row']} {cell['column']}: {cell['value']}."
                )
    return " ".join(parts) or None


def agrees(answer: str, calls: list[ToolCall]) -> bool:
    """The answer states every tool's key result (its numbers, the rows a max/min named, the lines of
    code findings); an answer that does not is replaced by the tools' own statement."""
    said = _numbers(answer)
    for call in calls:
        r = call.result
        if r is None:
            continue
        if call.name == "calculate" and Decimal(r["value"]).normalize() not in said:
            return False
        if call.name == "solve":
            for sol in r.get("solutions", []):
                value = sol.split("=", 1)[-1].split("≈")[0].strip()
                if value.replace(" ", "") not in answer.replace(" ", ""):
                    return False
        if call.name == "check_code" and {Decimal(f["line"]) for f in r.get("findings", [])} - said:
            return False
        if call.name == "table":
            if not r.get("observed", True):
                return False  # "not observed" is said by the tool, not paraphrased
            value = str(r.get("value", ""))
            if _NUMBER.fullmatch(value) and Decimal(value.replace(",", "")).normalize() not in said:
                return False
            if any(row not in answer for row in r.get("rows", [])):
                return False
    return True
