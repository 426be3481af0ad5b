"""Runs the interpreted Triton kernel tests (tests/kernels/interpreted) in their own process.

TRITON_INTERPRET must be set before Triton is imported, which a process that already ran
other tests cannot promise; a child process with the variable set can.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_triton_kernels_match_the_reference_in_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    # -P keeps the repository root off sys.path (its `operator/` folder would shadow the
    # standard library's operator module).
    command = [sys.executable, "-P", "-m", "pytest", "tests/kernels/interpreted", "-q"]
    command += ["-p", "no:cacheprovider"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout, result.stdout[-2000:]
