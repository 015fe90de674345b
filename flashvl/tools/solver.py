"""Equations and expressions solved exactly with sympy, with the steps, in the question's language.

The input is checked before sympy sees it: a short string of numbers, single-letter variables,
``+ - * / ^ ( ) = .`` and a few named functions (sqrt). ``parse_expr`` is then called with no
names available beyond those symbols (sympy's parser evaluates the text it builds, so nothing else
may reach it). Degree and size are bounded so that solving stays fast; the caller runs it in a
worker thread under a deadline.
"""

from __future__ import annotations

import re
from typing import Any

MAX_CHARS = 160
MAX_DEGREE = 4
MAX_VARIABLES = 2
_ALLOWED = re.compile(r"^[0-9a-zA-Z+\-*/^().=,\s]+$")
_FUNCTIONS = {"sqrt"}


class SolveError(ValueError):
    """Not an equation or expression this tool handles."""


def _normalise(text: str) -> str:
    text = text.strip().rstrip("。.?？!！")
    for a, b in (("×", "*"), ("÷", "/"), ("−", "-"), ("（", "("), ("）", ")"), ("＝", "="), ("²", "^2"), ("³", "^3")):
        text = text.replace(a, b)
    text = re.sub(r"^(solve|求解|解方程|解)[:：\s]*", "", text, flags=re.IGNORECASE)
    return text.replace(" ", "")


def _check(text: str) -> None:
    if not text or len(text) > MAX_CHARS or not _ALLOWED.match(text):
        raise SolveError(
            f"an equation or expression of up to {MAX_CHARS} characters with numbers, single-letter "
            "variables and + - * / ^ ( ) = is needed"
        )
    words = set(re.findall(r"[a-zA-Z]{2,}", text))
    if words - _FUNCTIONS:
        raise SolveError(f"unknown names: {', '.join(sorted(words - _FUNCTIONS))} (variables are single letters)")
    if text.count("=") > 1:
        raise SolveError("one equation at a time")
    if re.search(r"\^\s*\(?\s*\d{2,}", text):
        raise SolveError(f"powers up to {MAX_DEGREE} only")


def _parse(side: str, symbols: dict[str, Any]) -> Any:
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    names: dict[str, Any] = dict(symbols) | {
        "sqrt": sympy.sqrt,
        "Integer": sympy.Integer,
        "Float": sympy.Float,
        "Rational": sympy.Rational,
        "Symbol": sympy.Symbol,
    }
    transformations = (*standard_transformations, implicit_multiplication_application, convert_xor)
    try:
        return parse_expr(
            side,
            local_dict=names,
            global_dict={"__builtins__": {}, **names},
            transformations=transformations,
            evaluate=True,
        )
    except Exception as exc:  # sympy raises many kinds for bad input
        raise SolveError(f"cannot read {side!r} as maths") from exc


def _show(value: Any) -> str:
    import sympy

    text = sympy.sstr(value)
    if getattr(value, "is_Rational", False) and not getattr(value, "is_Integer", False):
        text += f" ≈ {sympy.N(value, 6)}"
    return text.replace("**", "^")


_WORDS = {
    "en": {
        "equation": "Equation: {eq}",
        "move": "Move everything to one side: {expr} = 0",
        "linear": "It is linear in {x}: {a}·{x} = {b}",
        "divide": "Divide both sides by {a}: {x} = {v}",
        "factor": "Factor: {f} = 0",
        "roots": "Solutions: {sols}",
        "none": "No solution: the two sides are never equal",
        "all": "Every value of {x} satisfies it (both sides are the same)",
        "simplify": "Simplify: {expr} = {v}",
        "check": "Check: substituting {x} = {v} gives {l} = {r}",
    },
    "zh": {
        "equation": "方程:{eq}",
        "move": "移项,整理为:{expr} = 0",
        "linear": "这是关于 {x} 的一次方程:{a}·{x} = {b}",
        "divide": "两边同除以 {a}:{x} = {v}",
        "factor": "因式分解:{f} = 0",
        "roots": "解得:{sols}",
        "none": "无解:两边永远不相等",
        "all": "{x} 取任何值都成立(两边恒等)",
        "simplify": "化简:{expr} = {v}",
        "check": "检验:把 {x} = {v} 代入,左边 = {l},右边 = {r}",
    },
}


def solve(problem: str, lang: str = "en") -> dict[str, Any]:
    """Solve one equation (or simplify one expression); ``{"problem", "kind", "solutions", "steps"}``."""
    import sympy

    words = _WORDS["zh" if lang == "zh" else "en"]
    text = _normalise(problem)
    _check(text)
    letters = sorted(set(re.findall(r"(?<![a-zA-Z])[a-zA-Z](?![a-zA-Z])", text)))
    if len(letters) > MAX_VARIABLES:
        raise SolveError(f"at most {MAX_VARIABLES} variables")
    symbols = {name: sympy.Symbol(name) for name in letters}
    if "=" not in text:
        value = sympy.simplify(_parse(text, symbols))
        return {
            "problem": problem,
            "kind": "expression",
            "solutions": [_show(value)],
            "steps": [words["simplify"].format(expr=text, v=_show(value))],
        }
    left_text, right_text = text.split("=")
    left, right = _parse(left_text, symbols), _parse(right_text, symbols)
    expr = sympy.expand(left - right)
    free = sorted(expr.free_symbols, key=lambda s: s.name)
    steps = [words["equation"].format(eq=f"{left_text} = {right_text}"), words["move"].format(expr=_show(expr))]
    if not free:
        ok = sympy.simplify(expr) == 0
        steps.append(words["all" if ok else "none"].format(x="x"))
        return {"problem": problem, "kind": "identity" if ok else "contradiction", "solutions": [], "steps": steps}
    x = free[0]
    poly = sympy.Poly(expr, x) if expr.is_polynomial(x) else None
    if poly is not None and poly.degree() > MAX_DEGREE:
        raise SolveError(f"degree {poly.degree()} is above {MAX_DEGREE}")
    if poly is not None and poly.degree() == 1 and len(free) == 1:
        a, b = poly.all_coeffs()
        value = sympy.Rational(-b, a) if a.is_Rational and b.is_Rational else -b / a
        steps.append(words["linear"].format(a=_show(a), x=x, b=_show(-b)))
        steps.append(words["divide"].format(a=_show(a), x=x, v=_show(value)))
        solutions = [value]
    else:
        factored = sympy.factor(expr)
        if factored != expr:
            steps.append(words["factor"].format(f=_show(factored)))
        solutions = sympy.solve(expr, x)
        if len(solutions) > 2 * MAX_DEGREE:
            raise SolveError("too many solutions to list")
    if not solutions:
        steps.append(words["none"])
    else:
        steps.append(words["roots"].format(sols=", ".join(f"{x} = {_show(v)}" for v in solutions)))
        if len(free) == 1:
            first = solutions[0]
            steps.append(
                words["check"].format(
                    x=x,
                    v=_show(first),
                    l=_show(sympy.simplify(left.subs(x, first))),
                    r=_show(sympy.simplify(right.subs(x, first))),
                )
            )
    return {
        "problem": problem,
        "kind": "equation",
        "variable": str(x),
        "solutions": [f"{x} = {_show(v)}" for v in solutions],
        "steps": steps,
    }


_EQUATION_LINE = re.compile(
    r"[0-9a-zA-Z+\-*/^().=×÷−（）²³\s]*[a-zA-Z][0-9a-zA-Z+\-*/^().=×÷−（）²³\s]*=[0-9a-zA-Z+\-*/^().×÷−（）²³\s]+"
)


def find_problem(text: str) -> str | None:
    """The first line of OCR text that looks like an equation in one or two letters (``2x + 3 = 11``)."""
    for line in text.splitlines():
        for match in _EQUATION_LINE.finditer(line.replace("＝", "=")):
            candidate = match.group(0).strip()
            if (
                re.search(r"\d", candidate)
                and len(set(re.findall(r"(?<![a-zA-Z])[a-zA-Z](?![a-zA-Z])", candidate))) >= 1
            ):
                return candidate
    return None
