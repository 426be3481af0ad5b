"""JSON result lines: the fields every benchmark line carries, and printing one line.

stdout carries nothing but these lines (one JSON object each), so a run can be piped straight
into a file or `jq`; progress and logs go to stderr.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any, TextIO

from llmservice import __version__


def device_name(device: str) -> str:
    """What a result line calls the device: the GPU's name on CUDA, "cpu" otherwise."""
    if device.startswith("cuda"):
        import torch

        return str(torch.cuda.get_device_name(torch.device(device)))
    return "cpu"


def base_fields(workload: str, engine: str, model: str, device: str) -> dict[str, Any]:
    """The fields that open every result line (where, what, when)."""
    return {
        "workload": workload,
        "engine": engine,
        "model": model,
        "device": device_name(device),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "llmservice_version": __version__,
    }


def emit(record: dict[str, Any], stream: TextIO | None = None) -> None:
    """Print one result as a single JSON line and flush, so a killed run keeps what it printed."""
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(record, separators=(", ", ": ")) + "\n")
    out.flush()


def rate(count: float, seconds: float) -> float:
    """`count / seconds` rounded to 0.01; 0.0 for a zero duration (nothing was measured)."""
    return round(count / seconds, 2) if seconds > 0 else 0.0
