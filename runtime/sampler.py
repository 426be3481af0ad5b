"""The sampler: next tokens (and their logprobs) from the logits of a batch with mixed parameters.

Order of operations, per row:
1. raw logprobs = log_softmax(logits) (what `logprobs` reports, as vLLM's default);
2. stop tokens and EOS masked while fewer than min_tokens tokens were generated, then the
   request's logit bias added;
3. penalties: repetition over prompt + output (HF's rule: divide positive logits, multiply
   negative ones), presence and frequency over the output (OpenAI's rule);
4. greedy rows take the argmax here;
5. other rows: temperature, then min-p, then top-k and top-p, then a draw.

The draw is the exponential race `argmax(p / q)` with `q ~ Exp(1)`, which samples from p. A
seeded request draws its q from its own generator, re-seeded for every token from the request's
seed and the token's position, so its tokens depend only on its seed and its own logits: never
on which other requests share the batch, nor on draws thrown away (a token computed after the
request finished, or before it was preempted and recomputed, as the overlapped loop does).

`sample` leaves everything on the device (the overlapped loop copies it to the host later);
calling the sampler returns host values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmservice.runtime.model_inputs import staged
from llmservice.runtime.outputs import TokenLogprobs
from llmservice.runtime.sampling_metadata import SamplingMetadata


@dataclass(frozen=True, slots=True)
class SamplerOutput:
    """The sampled token of every row, and its logprobs when the row asked for them."""

    token_ids: list[int]
    """One token per row."""
    logprobs: list[TokenLogprobs | None]
    """Per row, None unless the request set `logprobs`."""


@dataclass(frozen=True, slots=True)
class LogprobTensors:
    """The logprobs of a step's sampled tokens, (num_rows,) unless said otherwise."""

    sampled: torch.Tensor
    """float32: each row's sampled-token logprob."""
    ranks: torch.Tensor
    """int64: its rank (1 = the most likely token)."""
    top_values: torch.Tensor | None
    """(num_rows, max_n) float32: the top logprobs (None when no row asked for any)."""
    top_ids: torch.Tensor | None
    """(num_rows, max_n) int64: their token ids."""

    def tensors(self) -> list[torch.Tensor]:
        """The tensors, in a fixed order (for copying them as a group)."""
        extra = (
            []
            if self.top_values is None or self.top_ids is None
            else [self.top_values, self.top_ids]
        )
        return [self.sampled, self.ranks, *extra]

    @staticmethod
    def of(tensors: list[torch.Tensor]) -> LogprobTensors:
        """The inverse of `tensors()`."""
        top_values, top_ids = (tensors[2], tensors[3]) if len(tensors) == 4 else (None, None)
        return LogprobTensors(tensors[0], tensors[1], top_values, top_ids)

    def rows(
        self, token_ids: list[int], num_logprobs: list[int | None]
    ) -> list[TokenLogprobs | None]:
        """Each asking row's `TokenLogprobs` (reads the tensors: host ones cost no sync)."""
        sampled: list[float] = self.sampled.tolist()
        ranks: list[int] = self.ranks.tolist()
        top_values = self.top_values.tolist() if self.top_values is not None else None
        top_ids = self.top_ids.tolist() if self.top_ids is not None else None
        result: list[TokenLogprobs | None] = []
        for row, n in enumerate(num_logprobs):
            if n is None:
                result.append(None)
                continue
            result.append(
                TokenLogprobs(
                    token_id=token_ids[row],
                    logprob=sampled[row],
                    rank=ranks[row],
                    top_token_ids=tuple(top_ids[row][:n]) if top_ids and n else (),
                    top_logprobs=tuple(top_values[row][:n]) if top_values and n else (),
                )
            )
        return result


@dataclass(frozen=True, slots=True)
class SampledTensors:
    """A step's sampled tokens and the asked-for logprobs, still on the device."""

    tokens: torch.Tensor
    """(num_rows,) int64."""
    logprobs: LogprobTensors | None
    """None when no row asked for logprobs."""
    num_logprobs: list[int | None]
    """Per row, how many top logprobs it asked for (None: no logprobs)."""

    def to_host(self) -> SamplerOutput:
        """Host values (waits for the device)."""
        token_ids: list[int] = self.tokens.tolist()
        if self.logprobs is None:
            return SamplerOutput(token_ids, [None] * len(token_ids))
        return SamplerOutput(token_ids, self.logprobs.rows(token_ids, self.num_logprobs))


class Sampler:
    """Samples one token per row; the shared generator serves rows without a seed."""

    def __init__(self, shared_generator: torch.Generator) -> None:
        self.shared_generator = shared_generator

    def __call__(self, logits: torch.Tensor, meta: SamplingMetadata) -> SamplerOutput:
        """logits: (num_rows, vocab) float32 (modified in place)."""
        return self.sample(logits, meta).to_host()

    def sample(self, logits: torch.Tensor, meta: SamplingMetadata) -> SampledTensors:
        """The tokens (and logprobs) on the device, queued without waiting for it."""
        raw_logprobs = (
            torch.log_softmax(logits, dim=-1)
            if any(n is not None for n in meta.num_logprobs)
            else None
        )
        _mask_banned(logits, meta)
        if meta.logit_bias is not None:
            cells, values = meta.logit_bias
            logits.index_put_((cells[0], cells[1]), values, accumulate=True)
        _apply_penalties(logits, meta)
        tokens = logits.argmax(dim=-1)  # (num_rows,)
        if not meta.all_greedy:
            sampled = self._sample(logits, meta)
            tokens = torch.where(meta.greedy, tokens, sampled)
        logprobs = None
        if raw_logprobs is not None:
            logprobs = logprob_tensors(raw_logprobs, tokens, meta.num_logprobs)
        return SampledTensors(tokens, logprobs, meta.num_logprobs)

    def _sample(self, logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
        logits = logits / meta.temperature.unsqueeze(1)
        if meta.min_p is not None:
            probs = torch.softmax(logits, dim=-1)
            threshold = meta.min_p.unsqueeze(1) * probs.max(dim=-1, keepdim=True).values
            logits = logits.masked_fill(probs < threshold, float("-inf"))
        if meta.top_k is not None or meta.top_p is not None:
            logits = _apply_top_k_top_p(logits, meta.top_k, meta.top_p)
        probs = torch.softmax(logits, dim=-1)  # (num_rows, vocab)
        race = torch.empty_like(probs)
        if any(g is None for g in meta.generators):
            race.exponential_(generator=self.shared_generator)
        for row, (generator, seed) in enumerate(zip(meta.generators, meta.draw_seeds, strict=True)):
            if generator is not None and seed is not None:
                generator.manual_seed(seed)  # host-side state: no wait for the device
                race[row].exponential_(generator=generator)
        # An exact 0 from the exponential would turn a masked token's 0 / 0 into NaN.
        race.clamp_(min=torch.finfo(race.dtype).tiny)
        return (probs / race).argmax(dim=-1)


def _mask_banned(logits: torch.Tensor, meta: SamplingMetadata) -> None:
    cells = [(row, token) for row, banned in enumerate(meta.banned_token_ids) for token in banned]
    if cells:
        # (2, num_cells) through pinned memory: the overlapped loop must not wait here.
        index = staged(torch.tensor(cells, dtype=torch.int64).T.contiguous(), logits.device)
        logits.index_put_((index[0], index[1]), torch.tensor(float("-inf"), device=logits.device))


def _token_counts(
    token_lists: list[list[int]], pending: torch.Tensor | None, vocab: int, device: torch.device
) -> torch.Tensor:
    """(num_rows, vocab) float32: occurrences of each token per row, the row's pending token
    (the step in flight's, -1 for none) included."""
    width = max((len(t) for t in token_lists), default=0) + 1
    # Pad with an extra column `vocab`, dropped at the end; the last column takes the pending
    # token (a device value, filled in on the device).
    index = torch.full((len(token_lists), width), vocab, dtype=torch.int64)
    for row, tokens in enumerate(token_lists):
        index[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
    index = staged(index, device)
    if pending is not None:
        index[:, -1] = torch.where(pending >= 0, pending, vocab)
    result = torch.zeros(len(token_lists), vocab + 1, device=device)
    result.scatter_add_(1, index, torch.ones_like(index, dtype=result.dtype))
    return result[:, :vocab]


def _apply_penalties(logits: torch.Tensor, meta: SamplingMetadata) -> None:
    vocab, device = logits.shape[1], logits.device
    if meta.repetition_penalty is not None:
        seen = (
            _token_counts(
                [p + o for p, o in zip(meta.prompt_token_ids, meta.output_token_ids, strict=True)],
                meta.pending_tokens,
                vocab,
                device,
            )
            > 0
        )
        penalty = meta.repetition_penalty.unsqueeze(1)
        penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits.copy_(torch.where(seen, penalised, logits))
    if meta.presence_penalty is not None or meta.frequency_penalty is not None:
        counts = _token_counts(meta.output_token_ids, meta.pending_tokens, vocab, device)
        if meta.frequency_penalty is not None:
            logits -= meta.frequency_penalty.unsqueeze(1) * counts
        if meta.presence_penalty is not None:
            logits -= meta.presence_penalty.unsqueeze(1) * (counts > 0)


def _apply_top_k_top_p(
    logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None
) -> torch.Tensor:
    """Mask (to -inf) the tokens outside each row's top-k and top-p sets."""
    vocab = logits.shape[1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (num_rows, vocab)
    ranks = torch.arange(vocab, device=logits.device).unsqueeze(0)
    if top_k is not None:
        k = torch.where(top_k > 0, top_k, vocab).unsqueeze(1)
        sorted_logits = sorted_logits.masked_fill(ranks >= k, float("-inf"))
    if top_p is not None:
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the more likely ones already hold top_p of the mass (the most
        # likely token is always kept).
        mass_before = probs.cumsum(dim=-1) - probs
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p.unsqueeze(1), float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)


def logprob_tensors(
    logprobs: torch.Tensor, tokens: torch.Tensor, num_logprobs: list[int | None]
) -> LogprobTensors:
    """Each row's sampled-token logprob and rank, and the top-n logprobs of the largest n."""
    sampled = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)  # (num_rows,)
    ranks = (logprobs > sampled.unsqueeze(1)).sum(dim=-1) + 1
    max_n = max(n or 0 for n in num_logprobs)
    top_values, top_ids = logprobs.topk(max_n, dim=-1) if max_n else (None, None)
    return LogprobTensors(sampled, ranks, top_values, top_ids)
