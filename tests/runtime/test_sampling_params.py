"""SamplingParams: defaults as vLLM, and every bad value a ValueError naming its field."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from llmservice import SamplingParams


def test_defaults_are_vllm_defaults() -> None:
    params = SamplingParams()
    assert (params.n, params.temperature, params.top_p, params.top_k) == (1, 1.0, 1.0, 0)
    assert (params.max_tokens, params.min_tokens, params.logprobs) == (16, 0, None)
    assert params.stop_strings == () and params.stop_token_id_set == frozenset()
    assert not params.is_greedy
    assert SamplingParams(temperature=0.0).is_greedy


def test_stop_accepts_a_string_or_a_list() -> None:
    assert SamplingParams(stop="END").stop_strings == ("END",)
    assert SamplingParams(stop=["a", "b"]).stop_strings == ("a", "b")
    assert SamplingParams(stop_token_ids=[5, 7]).stop_token_id_set == {5, 7}


def test_is_picklable_and_hashable() -> None:
    params = SamplingParams(stop=["x"], stop_token_ids=[3], seed=4, logprobs=2)
    assert pickle.loads(pickle.dumps(params)) == params
    assert hash(params) == hash(pickle.loads(pickle.dumps(params)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 0),
        ("n", 1.5),
        ("temperature", -0.1),
        ("temperature", "hot"),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -2),
        ("min_p", 1.1),
        ("min_p", float("nan")),
        ("seed", 1.0),
        ("max_tokens", 0),
        ("min_tokens", -1),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3.0),
        ("repetition_penalty", 0.0),
        ("logprobs", -1),
        ("logprobs", 21),
        ("stop", [1, 2]),
        ("stop", [""]),
        ("stop_token_ids", [-1]),
        ("stop_token_ids", "12"),
        ("ignore_eos", "yes"),
        # Past int64 these used to crash a step (int64 tensors, torch generators).
        ("top_k", 2**63),
        ("seed", 2**63),
        ("seed", -(2**63) - 1),
        ("stop_token_ids", [2**63]),
        ("max_tokens", 2**64),
        ("logit_bias", {5: 100.5}),
        ("logit_bias", {-1: 1.0}),
        ("logit_bias", {5: float("nan")}),
        ("logit_bias", "5"),
        ("logit_bias", {i: 1.0 for i in range(301)}),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_min_tokens_above_max_tokens_is_rejected() -> None:
    with pytest.raises(ValueError, match="min_tokens"):
        SamplingParams(max_tokens=4, min_tokens=5)


def test_each_of_n_samples_gets_its_own_seed_within_int64() -> None:
    params = SamplingParams(n=3, seed=2**63 - 2)
    seeds = [params.sample_seed(i) for i in range(3)]
    assert seeds == [2**63 - 2, 2**63 - 1, -(2**63)]  # wrapped, never out of range
    assert [SamplingParams(seed=s).seed for s in seeds] == seeds
    assert SamplingParams(n=2).sample_seed(1) is None


def test_logit_bias_is_normalised_to_sorted_pairs() -> None:
    params = SamplingParams(logit_bias={7: -100, 3: 2.5})
    assert params.logit_bias_items == ((3, 2.5), (7, -100.0))
    assert params == SamplingParams(logit_bias=[(3, 2.5), (7, -100)])
    assert hash(params) == hash(SamplingParams(logit_bias={3: 2.5, 7: -100.0}))
    assert SamplingParams().logit_bias_items == ()
