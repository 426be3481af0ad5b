"""The workload table and its prompts: the fixed shapes of DESIGN.md section 5, reproducible."""

from __future__ import annotations

import json

import pytest

from llmservice.runtime.bench.workloads import (
    DEFAULT_MODEL,
    WORKLOADS,
    get_workload,
    make_prompts,
)


def test_the_table_holds_the_shapes_design_md_fixes() -> None:
    shapes = {
        name: (w.num_requests, w.shared_prefix_len, w.input_len, w.output_len)
        for name, w in WORKLOADS.items()
    }
    assert shapes == {
        "W1": (1000, 0, 512, 256),
        "W2": (1, 0, 128, 512),
        "W3": (200, 0, 4096, 32),
        "W4": (500, 2048, 128, 128),
        "W5": (400, 0, 512, 256),
    }
    assert WORKLOADS["W5"].request_rates == (4.0, 8.0, 16.0, 24.0, 32.0, 40.0, 48.0)
    assert WORKLOADS["W5"].ttft_slo_s == 1.0
    assert WORKLOADS["W4"].prompt_len == 2176


def test_default_model_is_the_llama_3_1_8b_architecture() -> None:
    with open(f"{DEFAULT_MODEL}/config.json") as f:
        config = json.load(f)
    assert (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["intermediate_size"],
        config["vocab_size"],
        config["rope_theta"],
        config["rope_scaling"]["rope_type"],
        config["max_position_embeddings"],
        config["torch_dtype"],
    ) == (4096, 32, 32, 8, 14336, 128256, 500000.0, "llama3", 131072, "bfloat16")


def test_prompts_are_reproducible_and_have_the_workload_shape() -> None:
    w1 = get_workload("w1").with_sizes(num_requests=5, input_len=7)
    prompts = make_prompts(w1, vocab_size=50, seed=3)
    assert len(prompts) == 5
    assert all(len(p) == 7 and all(0 <= t < 50 for t in p) for p in prompts)
    assert make_prompts(w1, vocab_size=50, seed=3) == prompts
    assert make_prompts(w1, vocab_size=50, seed=4) != prompts
    assert make_prompts(w1, vocab_size=50, seed=3, stream="warmup") != prompts
    assert len({tuple(p) for p in prompts}) == 5


def test_shared_prefix_prompts_share_exactly_the_prefix() -> None:
    w4 = get_workload("W4").with_sizes(num_requests=4, input_len=6, shared_prefix_len=10)
    prompts = make_prompts(w4, vocab_size=1000, seed=0)
    assert all(len(p) == 16 for p in prompts)
    assert len({tuple(p[:10]) for p in prompts}) == 1
    assert len({tuple(p[10:]) for p in prompts}) == 4
    # A warm-up stream has a prefix of its own, so it cannot warm the measured run's cache.
    assert make_prompts(w4, 1000, 0, "warmup")[0][:10] != prompts[0][:10]


def test_overrides_keep_what_is_not_overridden_and_mark_the_run_non_standard() -> None:
    w3 = get_workload("W3")
    small = w3.with_sizes(num_requests=2)
    assert (small.num_requests, small.input_len, small.output_len) == (2, 4096, 32)
    assert w3.is_standard() and not small.is_standard()


@pytest.mark.parametrize("field", ["num_requests", "input_len", "output_len"])
def test_sizes_below_one_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        get_workload("W1").with_sizes(**{field: 0})


def test_unknown_workload_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="W1, W2, W3, W4, W5"):
        get_workload("W9")
