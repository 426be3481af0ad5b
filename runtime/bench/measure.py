"""What the offline benchmarks measure of an engine, whichever engine it is.

`BenchEngine` is the small interface that both our `LLM` (`engine.py`) and the transformers
peer (`peer.py`) implement, so one piece of code times W1-W4 on either: start-up is timed when
the engine is made, `generate` times one batch from submission to the last token, and
`GenerationRun.checked` refuses a run whose outputs do not have exactly the requested length
(a benchmark that silently stopped early at EOS would report a fantasy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class BenchmarkError(RuntimeError):
    """A run that cannot be reported: wrong output lengths, a failed request, a bad setting."""


@dataclass(frozen=True, slots=True)
class GenerationRun:
    """One timed batch of requests."""

    elapsed_s: float
    """Wall seconds from handing the requests over to the last output token."""
    num_requests: int
    """Requests in the batch."""
    prompt_tokens: int
    """Prompt tokens over all requests (prefix-cache hits included, as vLLM counts them)."""
    output_tokens: int
    """Output tokens over all requests, counted from the outputs themselves."""

    @classmethod
    def checked(
        cls,
        elapsed_s: float,
        prompts: Sequence[Sequence[int]],
        outputs: Sequence[Sequence[int]],
        output_len: int,
        engine: str,
    ) -> GenerationRun:
        """A run of `prompts` whose `outputs` (token ids, in prompt order) were all checked to
        hold exactly `output_len` tokens; BenchmarkError naming the first that does not."""
        if len(outputs) != len(prompts):
            raise BenchmarkError(
                f"{engine}: {len(prompts)} requests sent but {len(outputs)} outputs returned"
            )
        for index, tokens in enumerate(outputs):
            if len(tokens) != output_len:
                raise BenchmarkError(
                    f"{engine}: request {index} returned {len(tokens)} tokens, expected "
                    f"{output_len} (max_tokens with ignore_eos must give exactly that many)"
                )
        return cls(
            elapsed_s=elapsed_s,
            num_requests=len(prompts),
            prompt_tokens=sum(len(p) for p in prompts),
            output_tokens=sum(len(o) for o in outputs),
        )


class BenchEngine(Protocol):
    """An engine under benchmark: made (and timed) by its constructor, then used for batches."""

    name: str
    """The `engine` field of its result lines ("llmservice", "transformers")."""
    startup_s: float
    """Seconds its constructor took (model build, KV cache, warm-up it does by itself)."""

    def generate(self, prompts: list[list[int]], output_len: int) -> GenerationRun:
        """Run `prompts` to `output_len` greedy tokens each, EOS ignored, and time it."""
        ...

    def details(self) -> dict[str, Any]:
        """The engine's settings, as fields of its result lines."""
        ...

    def close(self) -> None:
        """Release the model and its device memory, so the next engine can have it."""
        ...
