"""Command line of the local control plane.

python e2e/cluster build          # build/unpack the pinned binaries once (cached)
python e2e/cluster up [--dir D]   # start it; prints the KUBECONFIG to export
python e2e/cluster env [--dir D]  # print the exports again
python e2e/cluster down [--dir D] # stop every process and remove D
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .build import ChecksumError, ToolMissingError, cache_dir, ensure_binaries
from .control_plane import ControlPlane, stop

DEFAULT_DIR = Path(tempfile.gettempdir()) / "llmservice-k8s"


def _exports(directory: Path, bin_dir: Path) -> str:
    return f'export KUBECONFIG={directory / "kubeconfig"}\nexport PATH="{bin_dir}:$PATH"'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python e2e/cluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "up", "down", "env"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state folder (up/down/env)")
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    if args.command == "down":
        stop(directory)
        print(f"stopped; removed {directory}")
        return 0
    try:
        bin_dir = ensure_binaries()
    except (ToolMissingError, ChecksumError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.command == "build":
        print(json.dumps(json.loads((cache_dir() / "stamp.json").read_text()), indent=2))
    elif args.command == "up":
        ControlPlane(directory, bin_dir).up()
        print(f"# control plane up in {directory}; run `python e2e/cluster down` to stop it")
        print(_exports(directory, bin_dir))
    else:
        if not (directory / "kubeconfig").exists():
            print(f"no control plane in {directory}")
            return 1
        print(_exports(directory, bin_dir))
    return 0
