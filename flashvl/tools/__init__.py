"""Tools for the language stage: exact answers it should not compute itself.

- ``calculate``: decimal arithmetic, units and currency kept (``calculator``);
- ``solve``: one equation or expression with sympy, steps in the question's language (``solver``);
- ``table``: lookup / compare / max / min / sum / average over the table rebuilt from OCR (``table``);
- ``check_code``: Python read from a screenshot, checked without running it (``code``).

Every tool is deterministic, takes bounded input and runs nothing it is given. ``run_tool`` runs
one in a worker thread under a deadline and returns a ``ToolCall`` (name, arguments, result or
error, seconds): what the response lists under ``tools``. ``TOOL_SPECS`` describes them in the
OpenAI function-calling shape.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from flashvl.tools.calculator import CalcError, calculate
from flashvl.tools.code import check_python, looks_like_python
from flashvl.tools.solver import SolveError, find_problem, solve
from flashvl.tools.table import OPERATIONS, TableError, query_table

__all__ = [
    "OPERATIONS",
    "TOOL_NAMES",
    "TOOL_SPECS",
    "ToolCall",
    "calculate",
    "check_python",
    "find_problem",
    "looks_like_python",
    "query_table",
    "run_tool",
    "solve",
]

DEFAULT_TIMEOUT_S = 3.0
MAX_ARGUMENT_CHARS = 20_000

TOOL_SPECS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "calculate",
            "description": "Exact decimal arithmetic (+ - * / % and parentheses) over numbers, with currency or "
            "units kept, e.g. '¥12.50 + ¥3.20' or '100 - 71.50'.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "solve",
            "description": "Solve one equation (e.g. '2x + 3 = 11') or simplify an expression; returns the "
            "solutions and the steps.",
            "parameters": {
                "type": "object",
                "properties": {"problem": {"type": "string"}, "lang": {"type": "string", "enum": ["en", "zh"]}},
                "required": ["problem"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "table",
            "description": "Query the table read from the image: lookup (row, column), compare (row, other_row, "
            "column), or max / min / sum / average of a column; returns the cells used.",
            "parameters": {
                "type": "object",
                "properties": {
                    "operation": {"type": "string", "enum": list(OPERATIONS)},
                    "column": {"type": "string"},
                    "row": {"type": "string"},
                    "other_row": {"type": "string"},
                },
                "required": ["operation"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "check_code",
            "description": "Check Python code read from the image (syntax errors with line numbers, undefined "
            "names, literal division by zero) without running it.",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string"}},
                "required": ["code"],
            },
        },
    },
]
TOOL_NAMES = tuple(spec["function"]["name"] for spec in TOOL_SPECS)


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None
    seconds: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "arguments": self.arguments, "result": self.result, "seconds": round(self.seconds, 4)}
        if self.error is not None:
            out["error"] = self.error
        return out


def _call(name: str, arguments: dict[str, Any], table: list[list[str]] | None) -> dict[str, Any]:
    if name == "calculate":
        return calculate(str(arguments.get("expression", "")))
    if name == "solve":
        return solve(str(arguments.get("problem", "")), str(arguments.get("lang", "en")))
    if name == "table":
        if not table:
            return {"observed": False, "not_observed": "no table was read from the image"}
        return query_table(
            table,
            str(arguments.get("operation", "")),
            str(arguments.get("column", "")),
            str(arguments.get("row", "")),
            str(arguments.get("other_row", "")),
        )
    if name == "check_code":
        return check_python(str(arguments.get("code", "")))
    raise ValueError(f"unknown tool {name!r}; known: {', '.join(TOOL_NAMES)}")


async def run_tool(
    name: str,
    arguments: dict[str, Any],
    *,
    table: list[list[str]] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> ToolCall:
    """Run one tool off the event loop under ``timeout``; errors are returned, not raised."""
    start = time.perf_counter()
    if sum(len(str(v)) for v in arguments.values()) > MAX_ARGUMENT_CHARS:
        return ToolCall(name, arguments, None, 0.0, f"arguments over {MAX_ARGUMENT_CHARS} characters")
    try:
        result = await asyncio.wait_for(asyncio.to_thread(_call, name, arguments, table), timeout)
        error = None
    except (CalcError, SolveError, TableError, ValueError) as exc:
        result, error = None, str(exc)
    except TimeoutError:
        result, error = None, f"took longer than {timeout:g} s"
    return ToolCall(name, arguments, result, time.perf_counter() - start, error)
