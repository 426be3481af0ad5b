"""The sampler on hand-made logits: each transform, the sampling distribution, seeds, logprobs."""

from __future__ import annotations

import pytest
import torch

from llmservice import SamplingParams
from llmservice.runtime.sampler import Sampler
from llmservice.runtime.sampling_metadata import SamplingMetadata, SamplingRow
from llmservice.scheduler import Request, RequestLimits

CPU = torch.device("cpu")
LOGITS = [2.0, 1.5, -1.0, 0.5, 0.0]


def _row(
    params: SamplingParams,
    prompt: tuple[int, ...] = (4,),
    output: tuple[int, ...] = (),
    limits: RequestLimits | None = None,
) -> SamplingRow:
    request = Request("r", list(prompt), limits or RequestLimits(max_tokens=100))
    for token in output:
        request.append_output_token(token)
    generator = None
    if params.seed is not None:
        generator = torch.Generator().manual_seed(params.seed)
    return SamplingRow(params, request, generator)


def _sample(rows: list[SamplingRow], logits: list[float] = LOGITS, seed: int = 0) -> list[int]:
    batch = torch.tensor([logits] * len(rows))
    sampler = Sampler(torch.Generator().manual_seed(seed))
    return sampler(batch, SamplingMetadata.build(rows, CPU)).token_ids


def _frequencies(params: SamplingParams, draws: int = 20000) -> torch.Tensor:
    tokens = _sample([_row(params)] * draws)
    return torch.bincount(torch.tensor(tokens), minlength=len(LOGITS)).float() / draws


def test_greedy_and_degenerate_filters_take_the_argmax() -> None:
    rows = [
        _row(SamplingParams(temperature=0.0)),
        _row(SamplingParams(top_k=1)),
        _row(SamplingParams(top_p=0.01)),
        _row(SamplingParams(min_p=0.99)),
    ]
    assert _sample(rows) == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (SamplingParams(), torch.softmax(torch.tensor(LOGITS), 0)),
        (SamplingParams(temperature=0.5), torch.softmax(torch.tensor(LOGITS) / 0.5, 0)),
        (SamplingParams(top_k=2), torch.softmax(torch.tensor(LOGITS[:2]), 0)),
        # probs ~ [.50, .30, .02, .11, .07]: the top 2 already hold 0.6 of the mass
        (SamplingParams(top_p=0.6), torch.softmax(torch.tensor(LOGITS[:2]), 0)),
        # keep tokens at least 0.2 x the top probability: tokens 0, 1 and 3
        (
            SamplingParams(min_p=0.2),
            torch.softmax(torch.tensor([2.0, 1.5, float("-inf"), 0.5]), 0),
        ),
    ],
)
def test_samples_follow_the_filtered_distribution(
    params: SamplingParams, expected: torch.Tensor
) -> None:
    frequencies = _frequencies(params)
    expected = torch.nn.functional.pad(expected, (0, len(LOGITS) - len(expected)))
    assert torch.allclose(frequencies, expected, atol=0.015), (frequencies, expected)


def test_penalties() -> None:
    greedy = {"temperature": 0.0}
    # Token 0 (logit 2.0) is in the prompt: 2.0 / 2 = 1.0 < 1.5, so token 1 wins.
    assert _sample([_row(SamplingParams(repetition_penalty=2.0, **greedy), prompt=(0,))]) == [1]
    # Negative logits are multiplied: token 2 (-1.0) -> -2.0; the argmax is unchanged.
    assert _sample([_row(SamplingParams(repetition_penalty=2.0, **greedy), prompt=(2,))]) == [0]
    # Frequency counts occurrences: once 2.0 - 0.3 = 1.7 > 1.5, twice 2.0 - 0.6 = 1.4 < 1.5.
    freq = SamplingParams(frequency_penalty=0.3, **greedy)
    assert _sample([_row(freq, output=(0,))]) == [0]
    assert _sample([_row(freq, output=(0, 0))]) == [1]
    # Presence counts once however often: 2.0 - 0.6 = 1.4 < 1.5.
    presence = SamplingParams(presence_penalty=0.6, **greedy)
    assert _sample([_row(presence, output=(0, 0, 0))]) == [1]
    # Penalties over the prompt never apply for presence/frequency (OpenAI's rule).
    assert _sample([_row(presence, prompt=(0,))]) == [0]


def test_min_tokens_masks_stop_tokens_until_reached() -> None:
    limits = RequestLimits(max_tokens=10, min_tokens=2, stop_token_ids=frozenset({0}))
    params = SamplingParams(temperature=0.0, min_tokens=2)
    assert _sample([_row(params, output=(3,), limits=limits)]) == [1]
    assert _sample([_row(params, output=(3, 3), limits=limits)]) == [0]


def test_seeded_rows_ignore_their_neighbours() -> None:
    seeded = SamplingParams(seed=42)

    def draws(neighbours: int, position: int, shared_seed: int) -> list[int]:
        # One generator per request, kept across steps as the runner does; each step samples
        # the token after the last computed one.
        row = _row(seeded)
        others = [_row(SamplingParams(temperature=0.7)) for _ in range(neighbours)]
        rows = [*others[:position], row, *others[position:]]
        sampler = Sampler(torch.Generator().manual_seed(shared_seed))
        tokens = []
        for step in range(30):
            row.request.num_computed_tokens = 1 + step
            meta = SamplingMetadata.build(rows, CPU)
            tokens.append(sampler(torch.tensor([LOGITS] * len(rows)), meta).token_ids[position])
        return tokens

    alone = draws(0, 0, shared_seed=1)
    assert draws(3, 2, shared_seed=2) == alone
    assert draws(5, 0, shared_seed=3) == alone
    assert len(set(alone)) > 1  # it really samples


def test_a_seeded_draw_depends_on_the_position_only() -> None:
    """Draws thrown away (a token computed after a finish, or before a preemption) do not
    shift the later ones: the same position draws the same token again."""
    row = _row(SamplingParams(seed=42))
    sampler = Sampler(torch.Generator())

    def draw(position: int) -> int:
        row.request.num_computed_tokens = position
        meta = SamplingMetadata.build([row], CPU)
        return sampler(torch.tensor([LOGITS]), meta).token_ids[0]

    first = [draw(p) for p in range(1, 40)]
    draw(7)  # thrown away
    assert [draw(p) for p in range(1, 40)] == first
    assert len(set(first)) > 1


def test_logit_bias_forces_and_bans_tokens_greedy_or_sampled() -> None:
    assert _sample([_row(SamplingParams(temperature=0.0, logit_bias={4: 100}))]) == [4]
    banned = SamplingParams(temperature=0.0, logit_bias={0: -100})
    assert _sample([_row(banned), _row(SamplingParams(temperature=0.0))]) == [1, 0]
    sampled = SamplingParams(temperature=1.0, logit_bias={0: -100, 1: -100})
    assert 0 not in _sample([_row(sampled)] * 200) and 1 not in _sample([_row(sampled)] * 200)


def test_logprobs_are_raw_and_ranked() -> None:
    raw = torch.log_softmax(torch.tensor(LOGITS), 0)
    params = SamplingParams(temperature=0.0, repetition_penalty=2.0, logprobs=2)
    rows = [_row(params, prompt=(0,)), _row(SamplingParams(temperature=0.0))]
    sampler = Sampler(torch.Generator())
    out = sampler(torch.tensor([LOGITS] * 2), SamplingMetadata.build(rows, CPU))
    assert out.token_ids == [1, 0]
    logprobs = out.logprobs[0]
    assert logprobs is not None and out.logprobs[1] is None
    # Penalties change the choice, not the reported distribution: token 1 is rank 2 in it.
    assert (logprobs.token_id, logprobs.rank) == (1, 2)
    assert logprobs.logprob == pytest.approx(float(raw[1]))
    assert logprobs.top_token_ids == (0, 1)
    assert logprobs.top_logprobs == pytest.approx([float(raw[0]), float(raw[1])])
