"""The API process loads torch only while the engine core starts (in parallel with it)."""

from __future__ import annotations

import subprocess
import sys


def test_the_server_modules_do_not_import_torch() -> None:
    code = (
        "import sys, llmservice.runtime.server.lifecycle, llmservice.runtime.server.command; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
