"""scripts/venv.sh: a second checkout's set-up leaves this checkout's environment alone.

Before each checkout had a .venv of its own, the cached environment held one editable install,
and whichever checkout ran `make` last owned `import llmservice` for all of them (a CI clone
under /tmp re-pointed the working tree's tests at the clone, and at nothing once it was gone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import llmservice

ROOT = Path(__file__).resolve().parents[1]


def _shared_environment_is_built() -> bool:
    """Whether venv.sh would reuse a finished cached environment (it must not build one here:
    that downloads torch)."""
    probe = "key=$( { python3 --version; cat requirements/lock.txt; } | sha256sum | cut -c1-16); "
    probe += 'test -f "${LLMSERVICE_CACHE:-$HOME/.cache/llmservice}/venv/$key/.complete"'
    return subprocess.run(["bash", "-c", probe], cwd=ROOT).returncode == 0


def test_a_second_checkouts_set_up_keeps_this_checkouts_import(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to clone")
    if not _shared_environment_is_built() or not (ROOT / ".venv" / ".stamp").exists():
        pytest.skip("runs only where scripts/venv.sh has set this checkout up")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    printed = subprocess.run(
        ["bash", str(clone / "scripts" / "venv.sh")],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert Path(printed.strip()) == clone / ".venv"

    def imported_from(checkout: Path) -> Path:
        code = "import llmservice; print(llmservice.__file__)"
        python = checkout / ".venv" / "bin" / "python"
        result = subprocess.run(
            [str(python), "-P", "-c", code], env=env, capture_output=True, text=True, check=True
        )
        return Path(result.stdout.strip()).resolve()

    assert imported_from(clone) == clone.resolve() / "llmservice" / "__init__.py"
    assert imported_from(ROOT) == ROOT / "llmservice" / "__init__.py"
    # The suite's own interpreter imports this checkout too.
    assert Path(llmservice.__file__ or "").resolve() == ROOT / "llmservice" / "__init__.py"
