"""The `llmservice` command line.

Each subcommand lives in its own module that exposes `register(subparsers)`; this file only
collects them. Subcommands import their heavy dependencies (torch, aiohttp, kopf) lazily, so
`llmservice --version` and `llmservice --help` stay instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from llmservice import __version__

# Modules that each add one subcommand (`register(subparsers) -> None`).
_COMMAND_MODULES: tuple[str, ...] = (
    "llmservice.runtime.bench.command",
    "llmservice.operator.cli",
    "llmservice.runtime.server.command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmservice",
        description="A Kubernetes operator and a GPU serving runtime for large language models.",
    )
    parser.add_argument("--version", action="version", version=f"llmservice {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
