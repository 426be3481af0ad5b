"""The worked solutions the built-in model learns: true at every step, and the right value."""

from __future__ import annotations

import random
import re

import pytest

from llmservice.runtime.builtin.arithmetic import BinOp, Num, parse_chain, render, solve

# A column step of the working, e.g. `7*5+4=39` or `10-7-1=2` (whole-line rewrites such as
# `47*23 = 47*20+47*3` have spaces around `=` and are checked through the final value).
_COLUMN_STEP = re.compile(r"(?<![\d*+\-(])(\d+[+\-*]\d+(?:[+\-]\d+)?)=(\d+)")


def _random_chain(rng: random.Random) -> tuple[list[int], list[str]]:
    n_ops = rng.randint(1, 3)
    numbers = [rng.randint(0, 10 ** rng.randint(1, 3) - 1) for _ in range(n_ops + 1)]
    return numbers, [rng.choice("+-*") for _ in range(n_ops)]


def test_the_working_of_47_times_23_reads_as_documented() -> None:
    working, value = solve(parse_chain([47, 23], ["*"]))
    assert value == 1081
    assert working == (
        "47*23\n"
        "47*23 = 47*20+47*3\n"
        "47*2: 7*2=14 → 4, 4*2+1=9 → 94\n"
        "47*3: 7*3=21 → 1, 4*3+2=14 → 141\n"
        "940+141: 0+1=1 → 1, 4+4=8 → 81, 9+1=10 → 1081\n"
        "= 1081"
    )


def test_subtraction_borrows_and_drops_leading_zeros() -> None:
    working, value = solve(parse_chain([305, 298], ["-"]))
    assert value == 7
    assert working.splitlines()[1:] == [
        "305-298: 15-8=7 → 7, 10-9-1=0 → 07, 3-2-1=0 → 007",
        "= 7",
    ]


def test_a_negative_result_is_a_sign_rewrite_around_unsigned_working() -> None:
    working, value = solve(parse_chain([3, 47, 20], ["-", "+"]))
    assert value == -24
    assert "3-47 = -(47-3)" in working
    assert "-44+20 = -(44-20)" in working
    assert working.endswith("= -24")


def test_every_step_is_true_and_the_value_is_the_expressions() -> None:
    rng = random.Random(7)
    solved = steps = 0
    while solved < 1500:
        numbers, ops = _random_chain(rng)
        expr = parse_chain(numbers, ops)
        try:
            working, value = solve(expr)
        except ValueError:
            continue  # a product outside the trained range
        solved += 1
        assert value == eval(render(expr))  # Python's own precedence is the oracle
        lines = working.splitlines()
        assert lines[0] == render(expr)
        assert lines[-1] == f"= {value}"
        for left, right in _COLUMN_STEP.findall(working):
            assert eval(left) == int(right), (left, right, working)
            steps += 1
    assert steps > 5 * solved  # the pattern does find the column steps


def test_render_keeps_the_order_of_operations() -> None:
    assert render(parse_chain([12, 7, 3], ["+", "*"])) == "12+7*3"
    assert render(BinOp("*", BinOp("+", Num(12), Num(7)), Num(3))) == "(12+7)*3"
    assert render(BinOp("-", Num(9), BinOp("-", Num(5), Num(2)))) == "9-(5-2)"
    working, value = solve(BinOp("*", BinOp("+", Num(12), Num(7)), Num(3)))
    assert value == 57
    assert "= 19*3" in working


def test_the_shorter_factor_is_the_multiplier() -> None:
    working, value = solve(parse_chain([23, 478], ["*"]))
    assert value == 10994
    assert working.splitlines()[1] == "23*478 = 478*20+478*3"


@pytest.mark.parametrize(
    ("numbers", "ops", "message"),
    [
        ([123, 456], ["*"], "outside the trained range"),
        ([1, 2], ["/"], "unknown operator"),
        ([1, 2, 3], ["+"], "needs 2 numbers"),
    ],
)
def test_bad_expressions_raise_clear_errors(
    numbers: list[int], ops: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        solve(parse_chain(numbers, ops))
