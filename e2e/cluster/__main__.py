"""`python e2e/cluster build|up|down|env`: the local control plane by hand (see cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as `python e2e/cluster`: import this folder as the package `cluster` from e2e/.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    from cluster.cli import main
else:
    from .cli import main

sys.exit(main())
