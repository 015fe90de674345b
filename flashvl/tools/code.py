"""Checks for Python read from a screenshot: syntax errors, undefined names, literal faults.

``ast.parse`` finds syntax errors (with the line); pyflakes (a maintained checker, used as a
library: it reads the tree, it runs nothing) finds undefined and unused names; an ``ast`` walk
finds literal division by zero. The code is never executed. Size is bounded.
"""

from __future__ import annotations

import ast
import io
from typing import Any

MAX_CHARS = 20_000
MAX_FINDINGS = 20


def check_python(code: str) -> dict[str, Any]:
    """``{"ok", "findings": [{"line", "kind", "message"}]}``; ``ok`` is False when any finding is an error."""
    code = code[:MAX_CHARS]
    findings: list[dict[str, Any]] = []
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        findings.append(
            {"line": exc.lineno, "kind": "syntax-error", "message": exc.msg, "text": (exc.text or "").strip()}
        )
        return {"language": "python", "ok": False, "findings": findings, "lines": code.count("\n") + 1}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod)
            and isinstance(node.right, ast.Constant)
            and isinstance(node.right.value, int | float)
            and node.right.value == 0
        ):
            findings.append({"line": node.lineno, "kind": "zero-division", "message": "division by the literal 0"})
    try:
        from pyflakes.api import check
        from pyflakes.reporter import Reporter
    except ImportError:  # pyflakes is a dependency; without it only the checks above run
        check = None
    if check is not None:
        out, err = io.StringIO(), io.StringIO()
        check(code, "<image>", Reporter(out, err))
        for line in out.getvalue().splitlines():
            # "<image>:3:5: undefined name 'x'"
            parts = line.split(":", 3)
            if len(parts) == 4 and parts[1].isdigit():
                message = parts[3].strip()
                kind = "undefined-name" if message.startswith("undefined name") else "warning"
                findings.append({"line": int(parts[1]), "kind": kind, "message": message})
    findings.sort(key=lambda f: f["line"] or 0)
    errors = {"syntax-error", "zero-division", "undefined-name"}
    return {
        "language": "python",
        "ok": not any(f["kind"] in errors for f in findings),
        "findings": findings[:MAX_FINDINGS],
        "lines": code.count("\n") + 1,
    }


def looks_like_python(text: str) -> bool:
    """Text that is probably Python source (a few keywords and punctuation)."""
    import re

    hits = len(
        re.findall(r"^\s*(def |class |import |from \w+ import|return\b|for \w+ in |if .*:$|print\()", text, re.M)
    )
    return hits >= 2
