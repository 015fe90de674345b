"""Exact arithmetic over numbers read from an image: decimal, not float, and units kept.

Only numbers, + - * / % (percent of), parentheses and ``**`` with a small integer exponent are
accepted; the expression is parsed by ``ast`` and walked by hand (no ``eval``), bounded in length,
nesting and digits. A number may carry a currency or unit (``¥12.50``, ``3.2 kg``, ``12元``): when
every operand that has one agrees, the result carries it; mixed units are refused, not guessed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from decimal import Decimal, DivisionByZero, InvalidOperation, localcontext

MAX_CHARS = 300
MAX_NODES = 120
MAX_EXPONENT = 12
MAX_DIGITS = 40

_CURRENCY_PREFIX = {"$": "$", "¥": "¥", "￥": "¥", "€": "€", "£": "£", "usd": "USD", "rmb": "¥", "cny": "¥"}
_SUFFIX_UNITS = {
    "元": "元",
    "块": "元",
    "yuan": "元",
    "rmb": "¥",
    "usd": "USD",
    "dollars": "$",
    "dollar": "$",
    "kg": "kg",
    "g": "g",
    "km": "km",
    "m": "m",
    "cm": "cm",
    "mm": "mm",
    "l": "L",
    "ml": "mL",
    "h": "h",
    "min": "min",
    "s": "s",
    "公斤": "kg",
    "千克": "kg",
    "克": "g",
    "米": "m",
    "厘米": "cm",
    "小时": "h",
    "分钟": "min",
    "个": "个",
    "件": "件",
}
_NUMBER = r"\d[\d,]*(?:\.\d+)?"
_PREFIXED = re.compile(r"(?i)(US\$|\$|¥|￥|€|£|usd|rmb|cny)\s*(" + _NUMBER + ")")
_SUFFIXED = re.compile(
    r"(?i)("
    + _NUMBER
    + r")\s*("
    + "|".join(sorted(map(re.escape, _SUFFIX_UNITS), key=len, reverse=True))
    + r")(?![a-z])"
)
_PLAIN = re.compile(_NUMBER)
_LETTERS = str.maketrans("0123456789", "abcdefghij")


class CalcError(ValueError):
    """The expression is not plain arithmetic, too large, or mixes units."""


@dataclass(frozen=True)
class Quantity:
    value: Decimal
    unit: str | None = None


def _format(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    text = format(value.normalize(), "f")
    return text


def _number(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def _tokenise(expression: str) -> tuple[str, dict[str, str]]:
    """Replace each number-with-unit by a placeholder name; return the plain expression and units."""
    units: dict[str, str] = {}
    counter = iter(range(10_000))

    def keep(value: str, unit: str) -> str:
        name = "_q" + str(next(counter)).translate(_LETTERS)  # no digits: the number pass must not see it
        units[name] = f"{_number(value)}|{unit}"
        return f" {name} "

    text = expression.replace("×", "*").replace("÷", "/").replace("−", "-").replace("（", "(").replace("）", ")")
    text = text.replace("^", "**")
    text = _PREFIXED.sub(lambda m: keep(m.group(2), _CURRENCY_PREFIX.get(m.group(1).lower(), "$")), text)
    text = _SUFFIXED.sub(lambda m: keep(m.group(1), _SUFFIX_UNITS[m.group(2).lower()]), text)
    text = text.replace("%", "/100")
    text = _PLAIN.sub(lambda m: keep(m.group(0), ""), text)  # every literal exact: no float on the way
    return text, units


def _unit(a: str | None, b: str | None, op: str) -> str | None:
    if op in {"+", "-"}:
        if a and b and a != b:
            raise CalcError(f"cannot {'add' if op == '+' else 'subtract'} {a} and {b}")
        return a or b
    if op == "*":
        if a and b:
            raise CalcError(f"{a} times {b} is not supported")
        return a or b
    if op == "/":
        if a and b:
            if a != b:
                raise CalcError(f"{a} divided by {b} is not supported")
            return None  # a ratio
        return a
    return a


def evaluate(expression: str) -> Quantity:
    """The exact value of ``expression`` (raises ``CalcError``)."""
    if not expression or len(expression) > MAX_CHARS:
        raise CalcError(f"an expression of 1 to {MAX_CHARS} characters is needed")
    plain, units = _tokenise(expression)
    if re.search(r"[^a-jq_+\-*/() \t]", plain):
        bad = sorted(set(re.findall(r"[^a-jq_+\-*/() \t]", plain)))
        raise CalcError(f"only numbers and + - * / ( ) are allowed, not {''.join(bad)!r}")
    try:
        tree = ast.parse(plain.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalcError(f"not an arithmetic expression: {exc.msg}") from exc
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalcError("the expression is too long")

    def walk(node: ast.AST) -> Quantity:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Name) and node.id in units:
            value, unit = units[node.id].split("|", 1)
            return Quantity(Decimal(value), unit or None)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = walk(node.operand)
            return Quantity(-inner.value if isinstance(node.op, ast.USub) else inner.value, inner.unit)
        if isinstance(node, ast.BinOp):
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow):
                if right.unit or right.value != right.value.to_integral_value() or abs(right.value) > MAX_EXPONENT:
                    raise CalcError(f"exponents must be whole numbers up to {MAX_EXPONENT}")
                return Quantity(left.value ** int(right.value), left.unit)
            ops: dict[type, str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
            op = ops.get(type(node.op))
            if op is None:
                raise CalcError("only + - * / and ** are allowed")
            joined = _unit(left.unit, right.unit, op)
            if op == "+":
                return Quantity(left.value + right.value, joined)
            if op == "-":
                return Quantity(left.value - right.value, joined)
            if op == "*":
                return Quantity(left.value * right.value, joined)
            if right.value == 0:
                raise CalcError("division by zero")
            return Quantity(left.value / right.value, joined)
        raise CalcError(f"not allowed in an expression: {type(node).__name__}")

    with localcontext() as context:
        context.prec = 28
        context.Emax = 4 * MAX_DIGITS
        try:
            result = walk(tree)
        except (InvalidOperation, DivisionByZero, OverflowError) as exc:
            raise CalcError(f"cannot compute: {exc.__class__.__name__}") from exc
    if abs(result.value) >= Decimal(10) ** MAX_DIGITS:
        raise CalcError("the result is too large")
    value = result.value
    if value != value.to_integral_value():
        value = value.quantize(Decimal("1e-10")).normalize()
    return Quantity(value, result.unit)


def show(quantity: Quantity) -> str:
    """``¥16.70``, ``3.5 kg``, ``12元``, or the bare number."""
    number = _format(quantity.value)
    unit = quantity.unit
    if unit is None:
        return number
    if unit in {"$", "¥", "€", "£"}:
        if quantity.value != quantity.value.to_integral_value():
            number = f"{quantity.value:.2f}"  # money: cents
        return f"-{unit}{number[1:]}" if number.startswith("-") else f"{unit}{number}"
    if unit in {"元", "个", "件"}:
        return f"{number}{unit}"
    return f"{number} {unit}"


def calculate(expression: str) -> dict[str, object]:
    """The tool: ``{"expression", "value", "unit", "display"}`` (raises ``CalcError``)."""
    result = evaluate(expression)
    return {
        "expression": expression,
        "value": _format(result.value),
        "unit": result.unit,
        "display": show(result),
    }
