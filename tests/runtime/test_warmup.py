"""The start-up warm-up runs every kind of eager step once, so serving compiles nothing new."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import torch

from llmservice import LLM, SamplingParams
from llmservice.runtime import model_inputs
from llmservice.runtime.model_inputs import CascadePolicy
from llmservice.runtime.warmup import warm_up, warm_up_steps

KERNEL_MODULES = (
    "decode_attention", "extend_attention", "cascade_attention", "kv_cache_write", "rms_norm",
    "rotary", "activation", "gemv",
)  # fmt: skip


def test_warm_up_steps_cover_every_eager_kind() -> None:
    steps = dict(warm_up_steps(block_size=16, num_blocks=100, max_model_len=4096))
    long, short = steps["mixed, long chunk"], steps["mixed, short chunks"]
    assert long.num_decodes == 4 and long.query_start_loc.tolist()[-2:] == [4, 4 + 512]
    assert short.num_decodes == 4 and len(short.seq_lens) == 7
    assert steps["decode x1"].is_pure_decode and len(steps["decode x4"].seq_lens) == 4
    cascade = steps["cascade"]
    assert cascade.is_pure_decode and cascade.cascade_prefix_blocks > 0
    assert (cascade.seq_lens > cascade.cascade_prefix_blocks * 16).all()


@pytest.mark.parametrize(("num_blocks", "max_model_len"), [(3, 4096), (100, 20), (2, 4096)])
def test_warm_up_steps_fit_tiny_caches_and_short_models(
    num_blocks: int, max_model_len: int
) -> None:
    for _, host in warm_up_steps(16, num_blocks, max_model_len):
        assert host.block_tables.max() < num_blocks  # block 0 is the null block, never used
        assert host.seq_lens.max() < max_model_len


def test_warm_up_runs_on_the_reference_path() -> None:
    llm = LLM("builtin:tiny-reasoner", device="cpu")
    runner = llm.engine_core.model_runner
    warm_up(runner._compute_logits, runner.block_size, runner.num_blocks, 512)
    # The engine still serves normally afterwards (the warm-up's writes touch no request).
    out = llm.generate("1+1=", SamplingParams(temperature=0.0, max_tokens=4))
    assert len(out[0].outputs[0].token_ids) == 4


def _compiled_variants() -> int:
    from triton.runtime.jit import JITFunction

    total = 0
    for name in KERNEL_MODULES:
        try:
            module = importlib.import_module(f"llmservice.kernels.{name}")
        except ImportError:
            continue
        for obj in vars(module).values():
            if isinstance(obj, JITFunction):
                total += sum(len(caches[0]) for caches in obj.device_caches.values())
    return total


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_serving_compiles_no_kernel_after_start_up(
    checkpoints: dict[str, tuple[Path, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cascade forced down to small groups, so the shared-prefix requests below use it.
    monkeypatch.setattr(
        model_inputs,
        "CASCADE_POLICY",
        CascadePolicy(min_seqs=2, min_prefix_tokens=16, min_saved_tokens=0),
    )
    llm = LLM(str(checkpoints["llama"][0]), dtype="bfloat16", max_num_batched_tokens=256)
    before = _compiled_variants()
    gen = torch.Generator().manual_seed(0)
    shared = torch.randint(3, 300, (80,), generator=gen).tolist()
    prompts: list[Any] = [
        {"prompt_token_ids": torch.randint(3, 300, (n,), generator=gen).tolist()}
        for n in (1, 5, 17, 64, 130, 200, 7, 2, 90, 33)
    ] + [{"prompt_token_ids": [*shared, i]} for i in range(12)]
    params = [
        SamplingParams(temperature=0.0, max_tokens=5 + 3 * i, ignore_eos=True)
        for i in range(len(prompts))
    ]
    outputs = llm.generate(prompts, params)
    assert [len(o.outputs[0].token_ids) for o in outputs] == [
        5 + 3 * i for i in range(len(prompts))
    ]
    assert _compiled_variants() == before
