"""The sampler: next tokens (and their logprobs) from the logits of a batch with mixed parameters.

Order of operations, per row:
1. raw logprobs = log_softmax(logits) (what `logprobs` reports, as vLLM's default);
2. stop tokens and EOS masked while fewer than min_tokens tokens were generated;
3. penalties: repetition over prompt + output (HF's rule: divide positive logits, multiply
   negative ones), presence and frequency over the output (OpenAI's rule);
4. greedy rows take the argmax here;
5. other rows: temperature, then min-p, then top-k and top-p, then a draw.

The draw is the exponential race `argmax(p / q)` with `q ~ Exp(1)`, which samples from p. A
seeded request draws its q from its own generator, always exactly one vocabulary-sized vector
per sampled token, so its tokens depend only on its seed and its own logits, never on which
other requests share the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmservice.runtime.outputs import TokenLogprobs
from llmservice.runtime.sampling_metadata import SamplingMetadata


@dataclass(frozen=True, slots=True)
class SamplerOutput:
    """The sampled token of every row, and its logprobs when the row asked for them."""

    token_ids: list[int]
    """One token per row."""
    logprobs: list[TokenLogprobs | None]
    """Per row, None unless the request set `logprobs`."""


class Sampler:
    """Samples one token per row; the shared generator serves rows without a seed."""

    def __init__(self, shared_generator: torch.Generator) -> None:
        self.shared_generator = shared_generator

    def __call__(self, logits: torch.Tensor, meta: SamplingMetadata) -> SamplerOutput:
        """logits: (num_rows, vocab) float32 (modified in place)."""
        raw_logprobs = (
            torch.log_softmax(logits, dim=-1)
            if any(n is not None for n in meta.num_logprobs)
            else None
        )
        _mask_banned(logits, meta)
        _apply_penalties(logits, meta)
        tokens = logits.argmax(dim=-1)  # (num_rows,)
        if not meta.all_greedy:
            sampled = self._sample(logits, meta)
            tokens = torch.where(meta.greedy, tokens, sampled)
        token_list: list[int] = tokens.tolist()
        logprobs: list[TokenLogprobs | None] = [None] * len(token_list)
        if raw_logprobs is not None:
            logprobs = _gather_logprobs(raw_logprobs, tokens, meta.num_logprobs)
        return SamplerOutput(token_ids=token_list, logprobs=logprobs)

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
        for row, generator in enumerate(meta.generators):
            if generator is not None:
                race[row].exponential_(generator=generator)
        # An exact 0 from the exponential would turn a masked token's 0 / 0 into NaN.
        race.clamp_(min=torch.finfo(race.dtype).tiny)
        return (probs / race).argmax(dim=-1)


def _mask_banned(logits: torch.Tensor, meta: SamplingMetadata) -> None:
    for row, banned in enumerate(meta.banned_token_ids):
        if banned:
            logits[row, list(banned)] = float("-inf")


def _token_mask(
    token_lists: list[list[int]], vocab: int, device: torch.device, counts: bool
) -> torch.Tensor:
    """(num_rows, vocab): occurrences of each token per row (counts) or whether it occurs (bool)."""
    width = max((len(t) for t in token_lists), default=0)
    # Pad with an extra column `vocab`, dropped at the end.
    index = torch.full((len(token_lists), width), vocab, dtype=torch.int64)
    for row, tokens in enumerate(token_lists):
        index[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
    index = index.to(device)
    result = torch.zeros(len(token_lists), vocab + 1, device=device)
    result.scatter_add_(1, index, torch.ones_like(index, dtype=result.dtype))
    result = result[:, :vocab]
    return result if counts else result > 0


def _apply_penalties(logits: torch.Tensor, meta: SamplingMetadata) -> None:
    vocab, device = logits.shape[1], logits.device
    if meta.repetition_penalty is not None:
        seen = _token_mask(
            [p + o for p, o in zip(meta.prompt_token_ids, meta.output_token_ids, strict=True)],
            vocab,
            device,
            counts=False,
        )
        penalty = meta.repetition_penalty.unsqueeze(1)
        penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits.copy_(torch.where(seen, penalised, logits))
    if meta.presence_penalty is not None or meta.frequency_penalty is not None:
        counts = _token_mask(meta.output_token_ids, vocab, device, counts=True)
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


def _gather_logprobs(
    logprobs: torch.Tensor, tokens: torch.Tensor, num_logprobs: list[int | None]
) -> list[TokenLogprobs | None]:
    """Each asking row's sampled-token logprob and rank, and its top-n logprobs."""
    sampled = logprobs.gather(1, tokens.unsqueeze(1))  # (num_rows, 1)
    ranks = (logprobs > sampled).sum(dim=-1) + 1
    max_n = max(n or 0 for n in num_logprobs)
    top_values, top_ids = logprobs.topk(max_n, dim=-1) if max_n else (None, None)
    sampled_list: list[float] = sampled.squeeze(1).tolist()
    rank_list: list[int] = ranks.tolist()
    token_list: list[int] = tokens.tolist()
    top_values_list = top_values.tolist() if top_values is not None else None
    top_ids_list = top_ids.tolist() if top_ids is not None else None
    result: list[TokenLogprobs | None] = []
    for row, n in enumerate(num_logprobs):
        if n is None:
            result.append(None)
            continue
        result.append(
            TokenLogprobs(
                token_id=token_list[row],
                logprob=sampled_list[row],
                rank=rank_list[row],
                top_token_ids=tuple(top_ids_list[row][:n]) if top_ids_list and n else (),
                top_logprobs=tuple(top_values_list[row][:n]) if top_values_list and n else (),
            )
        )
    return result
