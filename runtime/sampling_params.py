"""`SamplingParams`: how one request is decoded, with vLLM's field names and meanings.

Every field is validated when the object is made; a bad value raises `ValueError` naming the
field, so an edge (the HTTP server, the `LLM` call) can report it before the engine sees it.
The object is frozen and picklable: it crosses the socket to the EngineCore process unchanged.

Logprobs are those of the model's raw distribution (log-softmax of the logits before penalties,
temperature, top-k/top-p/min-p), as vLLM's default `logprobs_mode="raw_logprobs"`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

# Temperatures below this are treated as greedy decoding (as vLLM does).
_GREEDY_EPSILON = 1e-5
# The most top logprobs a request may ask for per token (OpenAI's and vLLM's default limit).
MAX_LOGPROBS = 20
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Each biased token costs every step a little host work: a bound keeps one request from slowing
# all the others.
MAX_LOGIT_BIAS = 300


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding parameters of one request (vLLM names; defaults as vLLM's `SamplingParams`)."""

    n: int = 1
    """How many completions to generate for the prompt."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability adds up to at least top_p (0 < top_p <= 1)."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 or -1 keeps all."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p times the most likely token's probability (0..1)."""
    seed: int | None = None
    """Seed of this request's own random generator: the same seed gives the same text whatever
    else is in the batch. None draws from the engine's shared generator."""
    max_tokens: int | None = 16
    """Output tokens at most; None means up to the model's maximum length."""
    min_tokens: int = 0
    """Stop tokens, EOS and stop strings cannot end the output before this many tokens."""
    stop: str | Sequence[str] | None = None
    """Strings that end the output when generated; they are not included in the text."""
    stop_token_ids: Sequence[int] | None = None
    """Token ids that end the output when generated (in addition to EOS)."""
    ignore_eos: bool = False
    """Keep generating after the model's end-of-sequence token."""
    presence_penalty: float = 0.0
    """Subtracted from the logit of every token already in the output (-2..2)."""
    frequency_penalty: float = 0.0
    """Subtracted once per occurrence of a token in the output (-2..2)."""
    repetition_penalty: float = 1.0
    """Divides positive / multiplies negative logits of tokens in the prompt or output (> 0)."""
    logprobs: int | None = None
    """Return the sampled token's logprob and this many top logprobs per output token."""
    prompt_logprobs: int | None = None
    """Return each prompt token's logprob (from the first token on) and this many top logprobs
    at every prompt position; the prompt is then computed in full (no prefix-cache reuse)."""
    logit_bias: Mapping[int, float] | Sequence[tuple[int, float]] | None = None
    """Added to the logits of these token ids before sampling, greedy included (-100..100 each,
    at most MAX_LOGIT_BIAS entries; OpenAI's meaning: -100 bans a token, 100 forces it)."""
    include_stop_str_in_output: bool = False
    """Keep the matched stop string at the end of the text."""
    skip_special_tokens: bool = True
    """Leave special tokens (EOS, chat markers) out of the detokenized text."""

    def __post_init__(self) -> None:
        _check_int("n", self.n, minimum=1)
        _check_number("temperature", self.temperature, minimum=0.0)
        _check_number("top_p", self.top_p)
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        _check_int("top_k", self.top_k, minimum=-1)
        _check_number("min_p", self.min_p)
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.seed is not None:
            _check_int("seed", self.seed)
        if self.max_tokens is not None:
            _check_int("max_tokens", self.max_tokens, minimum=1)
        _check_int("min_tokens", self.min_tokens, minimum=0)
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens ({self.min_tokens}) must be at most max_tokens ({self.max_tokens})"
            )
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _check_number(name, value)
            if not -2.0 <= value <= 2.0:
                raise ValueError(f"{name} must be in [-2, 2], got {value}")
        _check_number("repetition_penalty", self.repetition_penalty)
        if self.repetition_penalty <= 0.0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.logprobs is not None:
            _check_int("logprobs", self.logprobs, minimum=0)
            if self.logprobs > MAX_LOGPROBS:
                raise ValueError(f"logprobs must be at most {MAX_LOGPROBS}, got {self.logprobs}")
        if self.prompt_logprobs is not None:
            _check_int("prompt_logprobs", self.prompt_logprobs, minimum=0)
            if self.prompt_logprobs > MAX_LOGPROBS:
                raise ValueError(
                    f"prompt_logprobs must be at most {MAX_LOGPROBS}, got {self.prompt_logprobs}"
                )
        for name in ("ignore_eos", "include_stop_str_in_output", "skip_special_tokens"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        # Normalise the sequences to tuples so the object stays hashable and immutable.
        object.__setattr__(self, "stop", _normalise_stop(self.stop))
        object.__setattr__(self, "stop_token_ids", _normalise_token_ids(self.stop_token_ids))
        object.__setattr__(self, "logit_bias", _normalise_logit_bias(self.logit_bias))

    @property
    def is_greedy(self) -> bool:
        """Whether decoding takes the most likely token (temperature ~ 0)."""
        return self.temperature < _GREEDY_EPSILON

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """The stop strings as a tuple (empty when there are none)."""
        return cast("tuple[str, ...]", self.stop)  # normalised in __post_init__

    @property
    def logit_bias_items(self) -> tuple[tuple[int, float], ...]:
        """The logit bias as (token id, bias) pairs sorted by id (empty when there is none)."""
        return cast("tuple[tuple[int, float], ...]", self.logit_bias)  # normalised

    @property
    def stop_token_id_set(self) -> frozenset[int]:
        """The stop token ids as a set (EOS not included)."""
        return frozenset(cast("tuple[int, ...]", self.stop_token_ids))

    def with_seed(self, seed: int | None) -> SamplingParams:
        """A copy with another seed (each of n samples gets its own)."""
        return dataclasses.replace(self, seed=seed)

    def sample_seed(self, index: int) -> int | None:
        """The seed of sample `index` of n: seed + index, wrapped to stay a 64-bit integer."""
        if self.seed is None:
            return None
        return (self.seed + index - INT64_MIN) % 2**64 + INT64_MIN


def _check_int(name: str, value: object, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    # Values go into int64 tensors and torch generators: a larger one would fail inside a step.
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{name} must fit in a signed 64-bit integer, got {value}")


def _check_number(name: str, value: object, minimum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value != value:  # NaN
        raise ValueError(f"{name} must not be NaN")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _normalise_stop(stop: object) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, Sequence) or not all(isinstance(s, str) for s in items):
        raise ValueError(f"stop must be a string or a list of strings, got {stop!r}")
    if any(s == "" for s in items):
        raise ValueError("stop must not contain an empty string")
    return tuple(items)


def _normalise_token_ids(token_ids: object) -> tuple[int, ...]:
    if token_ids is None:
        return ()
    if isinstance(token_ids, str) or not isinstance(token_ids, Sequence):
        raise ValueError(f"stop_token_ids must be a list of integers, got {token_ids!r}")
    for token_id in token_ids:
        _check_int("stop_token_ids", token_id, minimum=0)
    return tuple(token_ids)


def _normalise_logit_bias(bias: object) -> tuple[tuple[int, float], ...]:
    if bias is None:
        return ()
    items = list(bias.items()) if isinstance(bias, Mapping) else bias
    if isinstance(items, str) or not isinstance(items, Sequence):
        raise ValueError(f"logit_bias must map token ids to numbers, got {bias!r}")
    if len(items) > MAX_LOGIT_BIAS:
        raise ValueError(f"logit_bias has {len(items)} entries; at most {MAX_LOGIT_BIAS}")
    pairs: dict[int, float] = {}
    for item in items:
        if not isinstance(item, Sequence) or len(item) != 2:
            raise ValueError(f"logit_bias must map token ids to numbers, got {item!r}")
        token_id, value = item
        _check_int("logit_bias token id", token_id, minimum=0)
        _check_number("logit_bias value", value)
        if not -100.0 <= value <= 100.0:
            raise ValueError(f"logit_bias values must be in [-100, 100], got {value}")
        pairs[token_id] = float(value)
    return tuple(sorted(pairs.items()))
