"""`SamplingMetadata`: the per-row sampling parameters of one step, as tensors.

Built by the model runner from each sampled request's `SamplingParams`, its token history and
its own random generator; optional parts (penalties, top-k/top-p, min-p) are None when no row
uses them, so a plain batch pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmservice.runtime.model_inputs import staged
from llmservice.runtime.sampling_params import SamplingParams
from llmservice.scheduler import Request


@dataclass(frozen=True, slots=True)
class SamplingRow:
    """One sampled request as the sampler sees it."""

    params: SamplingParams
    """Its sampling parameters."""
    request: Request
    """Its token history and limits."""
    generator: torch.Generator | None
    """Its own generator when it has a seed."""
    pending: bool = False
    """Its previous token is sampled by the step in flight and not on the host yet."""

    @property
    def bans_stop_tokens(self) -> bool:
        """Whether its stop tokens are masked this step: fewer than min_tokens tokens so far,
        the one in flight counted."""
        limits = self.request.limits
        return self.request.num_output_tokens + self.pending < limits.min_tokens and bool(
            limits.stop_token_ids
        )


@dataclass(frozen=True, slots=True)
class SamplingMetadata:
    """Tensors of (num_rows,) unless said otherwise; None = no row uses the feature."""

    greedy: torch.Tensor
    """bool: rows decoded greedily."""
    all_greedy: bool
    """Every row is greedy (no random sampling this step)."""
    temperature: torch.Tensor
    """float32 temperatures (1.0 on greedy rows)."""
    top_k: torch.Tensor | None
    """int64 top-k (vocab size where disabled)."""
    top_p: torch.Tensor | None
    """float32 top-p (1.0 where disabled)."""
    min_p: torch.Tensor | None
    """float32 min-p (0.0 where disabled)."""
    repetition_penalty: torch.Tensor | None
    """float32 repetition penalties (1.0 where disabled)."""
    presence_penalty: torch.Tensor | None
    """float32 presence penalties."""
    frequency_penalty: torch.Tensor | None
    """float32 frequency penalties."""
    output_token_ids: list[list[int]]
    """Each row's generated tokens on the host (presence/frequency penalties)."""
    pending_tokens: torch.Tensor | None
    """(num_rows,) int64: each row's token of the step in flight, not in output_token_ids yet
    (-1: none); None unless a row with a penalty has one."""
    prompt_token_ids: list[list[int]]
    """Each row's prompt (the repetition penalty covers prompt and output, as HF)."""
    logit_bias: tuple[torch.Tensor, torch.Tensor] | None
    """(2, num_entries) int64 (row, token id) and (num_entries,) float32 biases added to the
    logits; None when no row has a logit bias."""
    banned_token_ids: list[tuple[int, ...]]
    """Per row, tokens masked this step (stop tokens and EOS before min_tokens)."""
    generators: list[torch.Generator | None]
    """Per row, its own generator (seeded requests) or None (the shared one)."""
    draw_seeds: list[int | None]
    """Per seeded row, the seed of this token's draw (from the request's seed and the token's
    position: a draw thrown away and done again gives the same token)."""
    num_logprobs: list[int | None]
    """Per row, how many top logprobs to return (None: no logprobs)."""

    @classmethod
    def build(
        cls,
        rows: Sequence[SamplingRow],
        device: torch.device,
        pending_tokens: torch.Tensor | None = None,
    ) -> SamplingMetadata:
        """The metadata of `rows`, tensors on `device`; `pending_tokens` as the field."""
        params = [row.params for row in rows]

        # Through pinned memory: a copy from pageable memory would wait for the step in flight.
        def column(values: list[float], neutral: float) -> torch.Tensor | None:
            if all(v == neutral for v in values):
                return None
            return staged(torch.tensor(values, dtype=torch.float32), device)

        greedy = [p.is_greedy for p in params]
        top_k = [p.top_k if p.top_k > 0 else 0 for p in params]
        banned = [
            tuple(row.request.limits.stop_token_ids) if row.bans_stop_tokens else () for row in rows
        ]
        temperature = [1.0 if g else p.temperature for g, p in zip(greedy, params, strict=True)]
        biased = [(row, t, v) for row, p in enumerate(params) for t, v in p.logit_bias_items]
        logit_bias = None
        if biased:
            cells = torch.tensor([[row for row, _, _ in biased], [t for _, t, _ in biased]])
            values = torch.tensor([v for _, _, v in biased], dtype=torch.float32)
            logit_bias = (staged(cells, device), staged(values, device))
        return cls(
            greedy=staged(torch.tensor(greedy, dtype=torch.bool), device),
            all_greedy=all(greedy),
            temperature=staged(torch.tensor(temperature, dtype=torch.float32), device),
            # 0 marks "disabled"; the sampler reads it as the vocabulary size.
            top_k=None
            if not any(top_k)
            else staged(torch.tensor(top_k, dtype=torch.int64), device),
            top_p=column([p.top_p for p in params], 1.0),
            min_p=column([p.min_p for p in params], 0.0),
            repetition_penalty=column([p.repetition_penalty for p in params], 1.0),
            presence_penalty=column([p.presence_penalty for p in params], 0.0),
            frequency_penalty=column([p.frequency_penalty for p in params], 0.0),
            output_token_ids=[row.request.output_token_ids for row in rows],
            pending_tokens=pending_tokens,
            prompt_token_ids=[row.request.prompt_token_ids for row in rows],
            logit_bias=logit_bias,
            banned_token_ids=banned,
            generators=[row.generator for row in rows],
            # The scheduler has advanced each request past its chunk: the sampled token's
            # position is num_computed_tokens, placeholder or not.
            draw_seeds=[
                None
                if row.params.seed is None
                else draw_seed(row.params.seed, row.request.num_computed_tokens)
                for row in rows
            ],
            num_logprobs=[p.logprobs for p in params],
        )


def draw_seed(seed: int, position: int) -> int:
    """The seed of the draw for the token at `position` of a request seeded with `seed`: a
    splitmix64 mix, in [0, 2^64) as torch generators take it."""
    mask = 2**64 - 1
    x = (seed + 0x9E3779B97F4A7C15 * (position + 1)) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)
