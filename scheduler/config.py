"""Scheduler configuration: the per-step budget, the sequence cap, the waiting policy and the
admission headroom."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmservice.scheduler.headroom import DEFAULT_HEADROOM, HeadroomConfig

Policy = Literal["fcfs", "priority"]
POLICIES: tuple[Policy, ...] = ("fcfs", "priority")


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Limits that every scheduled step respects."""

    max_num_seqs: int
    """Running requests at most (each step schedules at most this many)."""
    max_num_batched_tokens: int
    """Tokens computed per step at most, prefill chunks and decodes together."""
    max_model_len: int
    """Prompt plus output tokens of one request at most."""
    policy: Policy = "fcfs"
    """"fcfs": arrival order; "priority": lower `priority` first, then arrival order."""
    headroom: HeadroomConfig = DEFAULT_HEADROOM
    """How much future output of admitted requests stays reserved when admitting (headroom.py);
    `NO_HEADROOM` admits whenever the prompt fits."""

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.max_model_len < 2:
            raise ValueError(
                f"max_model_len must be >= 2 (one prompt and one output token), "
                f"got {self.max_model_len}"
            )
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
