"""The Triton attention kernels (decode, extend) and the dispatcher against the torch reference.

GPU tests use real shapes (Llama-3.1-8B heads: 32 query, 8 KV) in bfloat16/float16 with a
relative-error tolerance of 1e-2 (16-bit operands, float32 accumulation, as METHOD.md expects).
The same kernels run on tiny shapes in Triton's interpreter under tests/kernels/interpreted.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from llmservice.kernels import ops, reference
from llmservice.kernels.paged_batch import PagedBatch, make_paged_batch

CheckFn = Callable[[torch.Tensor, torch.Tensor, float], None]
GPU_TOLERANCE = 1e-2


def test_dispatcher_uses_the_reference_on_the_cpu() -> None:
    batch = make_paged_batch(
        [12, 5], [4, 5], num_heads=4, num_kv_heads=2, head_dim=16, block_size=4, dtype=torch.float32
    )
    ops.write_kv_cache(batch.key, batch.value, batch.k_cache, batch.v_cache, batch.slot_mapping)
    args = batch.attention_args(0.3)  # writes the same K/V again
    torch.testing.assert_close(ops.paged_attention(*args), reference.paged_attention(*args))


def test_decode_splits_long_contexts_only_when_the_batch_leaves_sms_idle() -> None:
    from llmservice.kernels.decode_attention import DecodeConfig, choose_num_splits

    h100, config = torch.device("cpu"), DecodeConfig()  # 132 SMs assumed off the GPU
    assert choose_num_splits(64, 8, 4096, h100, config) == 1  # 512 programs fill 132 SMs
    # One sequence: 33 splits x 8 KV heads = 2 programs per SM.
    assert choose_num_splits(1, 8, 4096, h100, config) == 33
    # A short context is cut no finer than min_split_tokens (64): 300 tokens -> 4 splits.
    assert choose_num_splits(1, 8, 300, h100, config) == 300 // config.min_split_tokens == 4
    assert choose_num_splits(1, 8, 60, h100, config) == 1  # shorter than one split


def test_extend_tiles_follow_the_batch_shape() -> None:
    from llmservice.kernels.extend_attention import default_config

    gpu = torch.device("cuda")  # only the device type is read
    prefill = default_config(128, gpu, num_tokens=4 * 4096, num_seqs=4)
    mostly_decodes = default_config(128, gpu, num_tokens=2048 + 128, num_seqs=1 + 128)
    assert prefill.block_m > mostly_decodes.block_m
    # New keys by TMA: 128-row tiles hold their registers (256 rows spill beside the context).
    assert default_config(128, gpu, num_tokens=4 * 4096, num_seqs=4, tma=True).block_m == 128
    assert default_config(128, torch.device("cpu"), 4096, 1).block_m <= 32  # interpreter


def gpu_batch(
    device: torch.device,
    seq_lens: list[int],
    query_lens: list[int],
    *,
    head_dim: int = 128,
    block_size: int = 16,
    dtype: torch.dtype = torch.bfloat16,
) -> PagedBatch:
    return make_paged_batch(
        seq_lens,
        query_lens,
        num_heads=32,
        num_kv_heads=8,
        head_dim=head_dim,
        block_size=block_size,
        dtype=dtype,
        device=device,
        seed=sum(seq_lens) % 1000,
        extra_table_columns=3,
        keep_dense=False,
    )


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("head_dim", "block_size", "dtype"),
    [(128, 16, torch.bfloat16), (64, 32, torch.float16), (128, 32, torch.bfloat16)],
)
def test_decode_kernel_batch_64_long_contexts_gpu(
    cuda: torch.device,
    assert_relative_error: CheckFn,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
) -> None:
    from llmservice.kernels import decode_attention

    gen = torch.Generator().manual_seed(head_dim + block_size)
    seq_lens = [4096] * 32 + torch.randint(1, 4097, (32,), generator=gen).tolist()
    batch = gpu_batch(
        cuda, seq_lens, [1] * 64, head_dim=head_dim, block_size=block_size, dtype=dtype
    )
    args = batch.attention_args(scale=head_dim**-0.5)
    out = decode_attention.paged_attention(*args, batch.poisoned_out())
    assert_relative_error(out, reference.paged_attention(*args), GPU_TOLERANCE)


@pytest.mark.gpu
@pytest.mark.parametrize("num_splits", [1, 7])
def test_decode_kernel_small_batch_split_choices_gpu(
    cuda: torch.device, assert_relative_error: CheckFn, num_splits: int
) -> None:
    from llmservice.kernels import decode_attention

    batch = gpu_batch(cuda, [3000, 17, 1], [1, 1, 1])
    args = batch.attention_args(scale=128**-0.5)
    out = decode_attention.paged_attention(*args, batch.poisoned_out(), num_splits=num_splits)
    assert_relative_error(out, reference.paged_attention(*args), GPU_TOLERANCE)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("seq_lens", "query_lens"),
    [
        ([4096], [4096]),  # a 4K prefill
        ([2048 + 512, 1000 + 300, 777], [512, 300, 777]),  # chunks over cached prefixes
        ([3000, 1, 250, 4096, 64, *[1500] * 8], [200, 1, 250, 1, 64, *[1] * 8]),  # mixed
    ],
    ids=["prefill_4k", "chunked_prefill", "mixed"],
)
@pytest.mark.parametrize(
    ("head_dim", "block_size", "dtype"),
    [(128, 16, torch.bfloat16), (64, 32, torch.float16)],
)
@pytest.mark.parametrize("keys", ["from_cache", "new_kv"])
def test_extend_kernel_real_shapes_gpu(
    cuda: torch.device,
    assert_relative_error: CheckFn,
    seq_lens: list[int],
    query_lens: list[int],
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    keys: str,
) -> None:
    from llmservice.kernels import extend_attention

    batch = gpu_batch(
        cuda, seq_lens, query_lens, head_dim=head_dim, block_size=block_size, dtype=dtype
    )
    args = batch.attention_args(scale=head_dim**-0.5)
    expected = reference.paged_attention(*args)
    new_kv = None
    if keys == "new_kv":  # TMA loads on Hopper
        new_kv = batch.key, batch.value
        batch.poison_new_slots()
    tma = extend_attention.reads_new_kv_by_tma(new_kv)
    config = extend_attention.default_config(head_dim, cuda, sum(query_lens), len(seq_lens), tma)
    out = extend_attention.paged_attention(
        *args, batch.poisoned_out(), new_kv=new_kv, config=config
    )
    assert_relative_error(out, expected, GPU_TOLERANCE)


@pytest.mark.gpu
@pytest.mark.parametrize("query_lens", [[1, 1, 1, 1], [1, 5, 1, 1]], ids=["decode", "mixed"])
def test_dispatcher_routes_both_batch_kinds_on_the_gpu(
    cuda: torch.device, assert_relative_error: CheckFn, query_lens: list[int]
) -> None:
    batch = gpu_batch(cuda, [700, 33, 1024, 5], query_lens)
    ops.write_kv_cache(batch.key, batch.value, batch.k_cache, batch.v_cache, batch.slot_mapping)
    args = batch.attention_args(scale=128**-0.5)  # writes the same K/V again
    out = ops.paged_attention(*args, batch.poisoned_out())
    assert_relative_error(out, reference.paged_attention(*args), GPU_TOLERANCE)


@pytest.mark.gpu
@pytest.mark.parametrize("num_decodes", [1, 3])
def test_dispatcher_splits_leading_decodes_off_a_mixed_batch_on_the_gpu(
    cuda: torch.device, assert_relative_error: CheckFn, num_decodes: int
) -> None:
    """Decodes first, then prefill chunks (as the runner lays them out, with their new K/V):
    decode + extend kernel."""
    query_lens = [1] * num_decodes + [300, 7, 1][: 4 - num_decodes]
    batch = gpu_batch(cuda, [700, 333, 1024, 600], query_lens)  # 1 <= query_len <= seq_len
    args = batch.attention_args(scale=128**-0.5)
    expected = reference.paged_attention(*args)
    out = ops.paged_attention(
        *args, batch.poisoned_out(), num_decodes=num_decodes, new_kv=(batch.key, batch.value)
    )
    assert_relative_error(out, expected, GPU_TOLERANCE)


@pytest.mark.gpu
def test_the_tail_of_a_mixed_batch_gets_tiles_for_its_own_shape(
    cuda: torch.device, assert_relative_error: CheckFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 decodes then three 16-token chunks: the chunks get the decode-heavy (128-row) tiles;
    counting the decodes' tokens would have picked the 256-row prefill tiles."""
    from llmservice.kernels import extend_attention

    configs: list[extend_attention.ExtendConfig | None] = []
    original = extend_attention.paged_attention

    def recording(
        *args: object,
        new_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        config: extend_attention.ExtendConfig | None = None,
    ) -> torch.Tensor:
        configs.append(config)
        return original(*args, new_kv=new_kv, config=config)  # type: ignore[arg-type]

    monkeypatch.setattr(extend_attention, "paged_attention", recording)
    batch = gpu_batch(cuda, [40] * 200 + [40, 40, 40], [1] * 200 + [16, 16, 16])
    args = batch.attention_args(scale=128**-0.5)
    out = ops.paged_attention(*args, batch.poisoned_out(), num_decodes=200)
    assert [c.block_m if c else None for c in configs] == [128]
    assert_relative_error(out, reference.paged_attention(*args), GPU_TOLERANCE)


@pytest.mark.gpu
def test_the_models_new_kv_layout_is_read_by_tma_on_hopper(
    cuda: torch.device, assert_relative_error: CheckFn
) -> None:
    """The keys a packed tensor, the values a column slice of the fused QKV output (rows of
    6144): on compute capability 9.0 and later both load through TMA descriptors."""
    from llmservice.kernels import extend_attention

    if torch.cuda.get_device_capability(cuda)[0] < 9:
        pytest.skip("TMA needs Hopper or later")
    batch = gpu_batch(cuda, [2048 + 300, 700], [300, 700])
    args = batch.attention_args(scale=128**-0.5)
    expected = reference.paged_attention(*args)
    num_tokens = batch.query.shape[0]
    qkv = torch.randn(num_tokens, 6144, dtype=torch.bfloat16, device=cuda)
    qkv[:, 5120:] = batch.value.reshape(num_tokens, 1024)
    value = qkv[:, 5120:].view(num_tokens, 8, 128)
    assert extend_attention.reads_new_kv_by_tma((batch.key, value))
    batch.poison_new_slots()
    out = ops.paged_attention(*args, batch.poisoned_out(), new_kv=(batch.key, value))
    assert_relative_error(out, expected, GPU_TOLERANCE)
