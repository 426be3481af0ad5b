"""Worked solutions of arithmetic expressions, in steps a small transformer can learn exactly.

The built-in model shows its working inside `<think>`. Every token of that working is either a
one-digit table look-up or a copy of text a few tokens back, so a model of a few million
parameters can learn it without error:
- an expression is reduced one operation at a time (leftmost innermost first, `*` before `+`
  and `-`), each reduction followed by a line `= <the expression that remains>`;
- additions, subtractions and products by one digit go column by column from the right, each
  column writing its digit in front of the digits found so far (`8+6=14 → 4, 7+5+1=13 → 34`),
  so the result builds up in reading order and is never reversed;
- a product by a two-digit number is split into tens and units (`47*23 = 47*20+47*3`);
- a negative value is handled by a sign rewrite (`5-12 = -(12-5)`) around unsigned working.

Example, the whole working of `47*23`:

    47*23
    47*23 = 47*20+47*3
    47*2: 7*2=14 → 4, 4*2+1=9 → 94
    47*3: 7*3=21 → 1, 4*3+2=14 → 141
    940+141: 0+1=1 → 1, 4+4=8 → 81, 9+1=10 → 1081
    = 1081
"""

from __future__ import annotations

from dataclasses import dataclass

OPERATORS = ("+", "-", "*")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2}

# Products stay within what the model is trained on: one factor of at most two digits, the
# other at most four (three in a question; four when it is an intermediate value).
MAX_MULTIPLIER = 99
MAX_MULTIPLICAND = 9999


@dataclass(frozen=True, slots=True)
class Num:
    """A number (negative only as an intermediate value)."""

    value: int


@dataclass(frozen=True, slots=True)
class BinOp:
    """A binary operation."""

    op: str
    """"+", "-" or "*"."""
    left: Expr
    """The left operand."""
    right: Expr
    """The right operand."""


Expr = Num | BinOp


def evaluate(expr: Expr) -> int:
    """The value of `expr`."""
    if isinstance(expr, Num):
        return expr.value
    left, right = evaluate(expr.left), evaluate(expr.right)
    if expr.op == "+":
        return left + right
    if expr.op == "-":
        return left - right
    return left * right


def render(expr: Expr) -> str:
    """`expr` without spaces and with the fewest parentheses that keep its order of operations."""
    if isinstance(expr, Num):
        return str(expr.value)
    left, right = render(expr.left), render(expr.right)
    if isinstance(expr.left, BinOp) and _PRECEDENCE[expr.left.op] < _PRECEDENCE[expr.op]:
        left = f"({left})"
    # NOTE: a right operand of equal precedence is parenthesised too, so that re-reading the
    # text (left to right) gives back the same tree and the same reduction order.
    if isinstance(expr.right, BinOp) and _PRECEDENCE[expr.right.op] <= _PRECEDENCE[expr.op]:
        right = f"({right})"
    return f"{left}{expr.op}{right}"


def parse_chain(numbers: list[int], ops: list[str]) -> Expr:
    """The tree of `n0 op0 n1 op1 n2 ...` with the usual precedence (`*` first, left to right)."""
    if len(numbers) != len(ops) + 1:
        raise ValueError(f"a chain of {len(ops)} operations needs {len(ops) + 1} numbers")
    # Group the products first, then fold the sums and differences from the left.
    terms: list[Expr] = [Num(numbers[0])]
    signs: list[str] = []
    for op, number in zip(ops, numbers[1:], strict=True):
        if op == "*":
            terms[-1] = BinOp("*", terms[-1], Num(number))
        elif op in ("+", "-"):
            signs.append(op)
            terms.append(Num(number))
        else:
            raise ValueError(f"unknown operator {op!r}; expected one of {OPERATORS}")
    expr = terms[0]
    for op, term in zip(signs, terms[1:], strict=True):
        expr = BinOp(op, expr, term)
    return expr


def solve(expr: Expr) -> tuple[str, int]:
    """The working of `expr` (lines of text) and its value.

    Raises ValueError when a product falls outside the trained range (MAX_MULTIPLIER by
    MAX_MULTIPLICAND) or a right operand is negative (never produced by the corpus).
    """
    lines = [render(expr)]
    while isinstance(expr, BinOp):
        node, x, y = _next_reduction(expr)
        value = _operate(x, node.op, y, lines)
        expr = _replace(expr, node, Num(value))
        lines.append(f"= {render(expr)}")
    return "\n".join(lines), expr.value


def _next_reduction(expr: BinOp) -> tuple[BinOp, int, int]:
    """The leftmost innermost operation (the first in post-order) and its two operands."""
    if isinstance(expr.left, BinOp):
        return _next_reduction(expr.left)
    if isinstance(expr.right, BinOp):
        return _next_reduction(expr.right)
    return expr, expr.left.value, expr.right.value


def _replace(expr: Expr, target: BinOp, value: Num) -> Expr:
    if expr is target:
        return value
    if isinstance(expr, Num):
        return expr
    return BinOp(expr.op, _replace(expr.left, target, value), _replace(expr.right, target, value))


def _operate(x: int, op: str, y: int, lines: list[str]) -> int:
    """Appends the working of `x op y` to `lines` and returns its value (y >= 0)."""
    if y < 0:
        raise ValueError("the right operand of an operation is never negative here")
    if op == "*":
        if x < 0:
            lines.append(f"{x}*{y} = -({-x}*{y})")
            return -_multiply(-x, y, lines)
        return _multiply(x, y, lines)
    if op == "+":
        if x >= 0:
            return _add(x, y, lines)
        if -x > y:
            lines.append(f"{x}+{y} = -({-x}-{y})")
            return -_subtract(-x, y, lines)
        lines.append(f"{x}+{y} = {y}-{-x}")
        return _subtract(y, -x, lines)
    if op == "-":
        if x < 0:
            lines.append(f"{x}-{y} = -({-x}+{y})")
            return -_add(-x, y, lines)
        if x < y:
            lines.append(f"{x}-{y} = -({y}-{x})")
            return -_subtract(y, x, lines)
        return _subtract(x, y, lines)
    raise ValueError(f"unknown operator {op!r}; expected one of {OPERATORS}")


def _digits(n: int, width: int) -> list[int]:
    """The digits of n from the units up, padded with zeros to `width`."""
    return [int(c) for c in reversed(str(n).zfill(width))]


def _add(a: int, b: int, lines: list[str]) -> int:
    width = max(len(str(a)), len(str(b)))
    steps: list[str] = []
    suffix, carry = "", 0
    for i, (x, y) in enumerate(zip(_digits(a, width), _digits(b, width), strict=True)):
        total = x + y + carry
        plus_carry = f"+{carry}" if carry else ""
        # The last column writes its whole sum: the carry out of it is the leading digit.
        suffix = (str(total) if i == width - 1 else str(total % 10)) + suffix
        steps.append(f"{x}+{y}{plus_carry}={total} → {suffix}")
        carry = total // 10
    lines.append(f"{a}+{b}: " + ", ".join(steps))
    return a + b


def _subtract(a: int, b: int, lines: list[str]) -> int:
    """a - b for a >= b >= 0; a borrow shows as a leading 1 on the column's digit (`15-8=7`)."""
    width = len(str(a))
    steps: list[str] = []
    suffix, borrow = "", 0
    for x, y in zip(_digits(a, width), _digits(b, width), strict=True):
        diff = x - y - borrow
        minus_borrow = f"-{borrow}" if borrow else ""
        borrow = 1 if diff < 0 else 0
        diff += 10 * borrow
        suffix = str(diff) + suffix
        steps.append(f"{'1' if borrow else ''}{x}-{y}{minus_borrow}={diff} → {suffix}")
    lines.append(f"{a}-{b}: " + ", ".join(steps))
    return a - b


def _multiply_by_digit(a: int, d: int, lines: list[str]) -> int:
    width = len(str(a))
    steps: list[str] = []
    suffix, carry = "", 0
    for i, x in enumerate(_digits(a, width)):
        total = x * d + carry
        plus_carry = f"+{carry}" if carry else ""
        suffix = (str(total) if i == width - 1 else str(total % 10)) + suffix
        steps.append(f"{x}*{d}{plus_carry}={total} → {suffix}")
        carry = total // 10
    lines.append(f"{a}*{d}: " + ", ".join(steps))
    return a * d


def _multiply(a: int, b: int, lines: list[str]) -> int:
    """a * b for a, b >= 0: the factor with fewer digits is the multiplier (b on a tie)."""
    multiplicand, multiplier = (b, a) if len(str(a)) < len(str(b)) else (a, b)
    if multiplier > MAX_MULTIPLIER or multiplicand > MAX_MULTIPLICAND:
        raise ValueError(
            f"{a}*{b} is outside the trained range ({MAX_MULTIPLICAND} by {MAX_MULTIPLIER})"
        )
    if multiplier < 10:
        return _multiply_by_digit(multiplicand, multiplier, lines)
    tens, units = divmod(multiplier, 10)
    if units == 0:
        lines.append(f"{a}*{b} = {multiplicand}*{tens}*10")
        return _multiply_by_digit(multiplicand, tens, lines) * 10
    lines.append(f"{a}*{b} = {multiplicand}*{tens}0+{multiplicand}*{units}")
    high = _multiply_by_digit(multiplicand, tens, lines) * 10
    low = _multiply_by_digit(multiplicand, units, lines)
    return _add(high, low, lines)
