"""What the engine hands back: token-level logprobs, and vLLM-shaped request outputs.

`TokenLogprobs` crosses the EngineCore socket (plain, picklable); `RequestOutput` and
`CompletionOutput` are what `LLM.generate` returns, with vLLM's field names so user code can
switch between the two.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenLogprobs:
    """Logprobs of one generated token (raw model distribution, before sampling transforms)."""

    token_id: int
    """The sampled token."""
    logprob: float
    """Its log-probability."""
    rank: int
    """Its rank in the distribution (1 = most likely)."""
    top_token_ids: tuple[int, ...] = ()
    """The most likely tokens, best first (as many as the request's `logprobs`)."""
    top_logprobs: tuple[float, ...] = ()
    """Their log-probabilities."""


@dataclass(frozen=True, slots=True)
class Logprob:
    """One entry of a position's logprobs dict (vLLM's `Logprob`)."""

    logprob: float
    """Log-probability of the token."""
    rank: int
    """Rank in the distribution (1 = most likely)."""
    decoded_token: str | None = None
    """The token's text, when a tokenizer is loaded."""


@dataclass(slots=True)
class CompletionOutput:
    """One of the n completions of a request."""

    index: int
    """Which of the n samples this is."""
    text: str
    """The generated text (stop string excluded unless include_stop_str_in_output)."""
    token_ids: list[int]
    """The generated token ids (a stop token included, as vLLM)."""
    cumulative_logprob: float | None
    """Sum of the generated tokens' logprobs, when logprobs were requested."""
    logprobs: list[dict[int, Logprob]] | None
    """Per generated token: {token id: Logprob} for the sampled and the top tokens."""
    finish_reason: str | None = None
    """"stop", "length" or "abort"; None while generating."""
    stop_reason: int | str | None = None
    """The stop string or stop token id that ended it (None for EOS or length)."""

    def finished(self) -> bool:
        """Whether this completion is over."""
        return self.finish_reason is not None


@dataclass(slots=True)
class RequestOutput:
    """A request's prompt and its completions (vLLM's `RequestOutput`)."""

    request_id: str
    """The id the request was added with."""
    prompt: str | None
    """The prompt text (None when it was given as token ids)."""
    prompt_token_ids: list[int]
    """The prompt's token ids."""
    outputs: list[CompletionOutput]
    """The n completions, by index."""
    finished: bool
    """Whether every completion is over."""
    num_cached_tokens: int = 0
    """Prompt tokens served from the prefix cache (of the first sample)."""
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None
    """With `prompt_logprobs`: per prompt token, its logprob and the top ones at its position
    (None for the first token, which has no context), as vLLM's."""
