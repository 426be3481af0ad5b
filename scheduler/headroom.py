"""Admission headroom: how much of their future output the running requests keep reserved.

Admitting a request only because its prompt fits lets a full batch outgrow the KV cache a few
hundred steps later; every preemption then recomputes a prompt and its outputs (W1 on an H100:
~250 preemptions and 20% more tokens computed than needed). So a waiting request is admitted
only if, after its prompt blocks, the free blocks still cover `ratio` of every admitted
request's remaining tokens (the rest of its prompt, and its remaining output capped at
`OUTPUT_ESTIMATE_CAP`, since a request's max_tokens is an upper bound, often far above what it
produces).

The ratio adapts, as SGLang's new-token ratio does: a preemption shows the estimate was too
low and resets it to `initial`; every step without one lowers it by `decay` toward `minimum`,
so requests that stop early (EOS) let more in over time.
"""

from __future__ import annotations

from dataclasses import dataclass

# Remaining output assumed at most this many tokens per request when reserving.
OUTPUT_ESTIMATE_CAP = 4096


@dataclass(frozen=True, slots=True)
class HeadroomConfig:
    """How the reserve ratio starts and moves."""

    initial: float = 1.0
    """Ratio at start and after every preemption (1: reserve all of the capped output)."""
    minimum: float = 0.1
    """The ratio never decays below this."""
    decay: float = 0.0015
    """Ratio lost per step without a preemption (1.0 to 0.1 in 600 steps)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.minimum <= self.initial <= 1.0:
            raise ValueError(
                "headroom needs 0 <= minimum <= initial <= 1, "
                f"got minimum={self.minimum}, initial={self.initial}"
            )
        if self.decay < 0.0:
            raise ValueError(f"headroom decay must be >= 0, got {self.decay}")


# The default: reserve all of the capped output at first, down to a tenth over 600 steps.
DEFAULT_HEADROOM = HeadroomConfig()
# Admission with no reserve: any request whose prompt blocks fit (vLLM's behaviour).
NO_HEADROOM = HeadroomConfig(initial=0.0, minimum=0.0, decay=0.0)


class Headroom:
    """The current reserve ratio and the tokens it reserves for one request."""

    def __init__(self, config: HeadroomConfig) -> None:
        self.config = config
        self.ratio = config.initial
        """Fraction of each request's capped remaining output kept reserved."""

    def step(self, preempted: bool) -> None:
        """Move the ratio after a step: back to `initial` on a preemption, else down."""
        config = self.config
        if preempted:
            self.ratio = config.initial
        elif self.ratio > config.minimum:
            self.ratio = max(config.minimum, self.ratio - config.decay)

    def reserve_tokens(self, remaining_prompt: int, remaining_output: int) -> int:
        """Tokens to keep free for a request: all of its prompt left, a share of its output."""
        output = min(remaining_output, OUTPUT_ESTIMATE_CAP)
        return remaining_prompt + int(self.ratio * output + 0.999)
