"""The `llmservice` console script as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import llmservice


def test_version_flag_prints_the_package_version() -> None:
    exe = shutil.which("llmservice") or f"{sys.prefix}/bin/llmservice"
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"llmservice {llmservice.__version__}"


def test_operator_subpackage_does_not_shadow_the_standard_library() -> None:
    import operator

    import llmservice.operator

    assert operator.add(2, 3) == 5
    assert llmservice.operator.__name__ == "llmservice.operator"
