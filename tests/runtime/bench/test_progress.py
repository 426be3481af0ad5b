"""The stderr progress bar: short in logs, exact in its counts."""

from __future__ import annotations

import io

from llmservice.runtime.bench.progress import ProgressBar


def test_a_log_gets_one_line_per_tenth_of_the_work() -> None:
    stream = io.StringIO()
    with ProgressBar("W1", 100, stream=stream) as bar:
        for _ in range(100):
            bar.update()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11  # 0/100 and each tenth up to 100/100
    assert lines[0].startswith("W1 0/100") and lines[-1].startswith("W1 100/100")


def test_counts_never_pass_the_total_and_close_is_idempotent() -> None:
    stream = io.StringIO()
    bar = ProgressBar("x", 3, stream=stream)
    bar.update(5)
    bar.close()
    bar.close()
    bar.update()
    assert bar.done == 3
    assert stream.getvalue().splitlines()[-1].startswith("x 3/3")
