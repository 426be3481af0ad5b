"""The fixed benchmark workloads W1-W5 (DESIGN.md section 5) and the prompts they are made of.

Each workload is defined here once, as a row of `WORKLOADS`; our engine, the transformers peer
and the serving client all take their shapes and their prompts from this module, so the peer
always runs exactly the workload we ran (or its first N requests).

Prompts are random token ids drawn from a generator seeded with `(seed, workload name)`: the
same seed gives the same prompts on every machine, and two workloads never share prompts.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The Llama-3.1-8B architecture as a config-only folder: with `load_format="dummy"` it is all a
# benchmark needs (no weights, no tokenizer).
DEFAULT_MODEL: str = str(Path(__file__).parent / "configs" / "llama-3.1-8b")


@dataclass(frozen=True, slots=True)
class Workload:
    """The shape of one benchmark workload."""

    name: str
    """"W1".."W5", as DESIGN.md section 5 names them."""
    description: str
    """What the workload measures, in a few words."""
    num_requests: int
    """Requests in one run (W5: in one run per arrival rate)."""
    input_len: int
    """Prompt tokens of each request that are its own (after the shared prefix, if any)."""
    output_len: int
    """Output tokens of each request (greedy, EOS ignored, so exactly this many)."""
    shared_prefix_len: int = 0
    """Tokens of one prefix that every request's prompt starts with (W4)."""
    request_rates: tuple[float, ...] = ()
    """Poisson arrival rates in requests per second, one run each (W5 only)."""
    ttft_slo_s: float | None = None
    """The p99 time-to-first-token that a rate must stay under to count as served (W5 only)."""

    def __post_init__(self) -> None:
        for field in ("num_requests", "input_len", "output_len"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {field} must be an integer >= 1, got {value!r}")
        prefix = self.shared_prefix_len
        if isinstance(prefix, bool) or not isinstance(prefix, int) or prefix < 0:
            raise ValueError(
                f"{self.name}: shared_prefix_len must be an integer >= 0, got {prefix!r}"
            )
        if any(rate <= 0 for rate in self.request_rates):
            raise ValueError(f"{self.name}: request rates must be > 0, got {self.request_rates}")

    @property
    def prompt_len(self) -> int:
        """Prompt tokens of each request, shared prefix included."""
        return self.shared_prefix_len + self.input_len

    def with_sizes(
        self,
        num_requests: int | None = None,
        input_len: int | None = None,
        output_len: int | None = None,
        shared_prefix_len: int | None = None,
    ) -> Workload:
        """This workload with some sizes replaced (None keeps the defined size); for small runs."""
        return dataclasses.replace(
            self,
            num_requests=self.num_requests if num_requests is None else num_requests,
            input_len=self.input_len if input_len is None else input_len,
            output_len=self.output_len if output_len is None else output_len,
            shared_prefix_len=(
                self.shared_prefix_len if shared_prefix_len is None else shared_prefix_len
            ),
        )

    def is_standard(self) -> bool:
        """Whether the sizes are those DESIGN.md defines (results comparable with vLLM's)."""
        return self == WORKLOADS[self.name]


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("W1", "throughput", num_requests=1000, input_len=512, output_len=256),
        Workload("W2", "latency of one request", num_requests=1, input_len=128, output_len=512),
        Workload("W3", "prefill-heavy throughput", num_requests=200, input_len=4096, output_len=32),
        Workload(
            "W4",
            "shared prefix, with and without prefix caching",
            num_requests=500,
            input_len=128,
            output_len=128,
            shared_prefix_len=2048,
        ),
        Workload(
            "W5",
            "online serving at Poisson arrival rates",
            num_requests=400,
            input_len=512,
            output_len=256,
            request_rates=(4.0, 8.0, 16.0, 24.0, 32.0, 40.0, 48.0),
            ttft_slo_s=1.0,
        ),
    )
}


def get_workload(name: str) -> Workload:
    """The workload named `name` ("W1".."W5"); ValueError naming the known ones otherwise."""
    workload = WORKLOADS.get(name.upper())
    if workload is None:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
    return workload


def make_prompts(
    workload: Workload, vocab_size: int, seed: int, stream: str = ""
) -> list[list[int]]:
    """The prompts of one run of `workload`: `num_requests` lists of `prompt_len` token ids.

    `stream` separates independent prompt sets of one workload (W5 draws a fresh set for each
    rate, so a server's prefix cache never serves one rate with the prompts of another).
    """
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    rng = np.random.default_rng(seed_words(seed, workload.name, stream))
    prefix = rng.integers(0, vocab_size, size=workload.shared_prefix_len, dtype=np.int64)
    unique = rng.integers(
        0, vocab_size, size=(workload.num_requests, workload.input_len), dtype=np.int64
    )  # (num_requests, input_len)
    prompts = np.concatenate(
        [np.broadcast_to(prefix, (workload.num_requests, prefix.size)), unique], axis=1
    )  # (num_requests, prompt_len)
    return [row.tolist() for row in prompts]


def seed_words(seed: int, *labels: str) -> list[int]:
    """A numpy seed (32-bit words) for the random stream named by `labels` under `seed`.

    Hashing the labels keeps streams independent and stable across Python processes
    (`str.__hash__` is randomised per process).
    """
    digest = hashlib.sha256("/".join(labels).encode()).digest()
    return [seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF] + [
        int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)
    ]
