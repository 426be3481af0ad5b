"""The GEMV path: the dispatcher's choice (from metadata alone, on the CPU), argument checks, and
the Triton kernel on the GPU at Llama-3.1-8B's decode shapes against a float64 product."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from llmservice.kernels import bench_chain, bench_gemv_chain, gemv, ops, reference

LLAMA_8B_SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (128256, 4096)]


def meta(*shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """A tensor with shape, dtype and strides but no storage (the choice reads only those)."""
    return torch.empty(*shape, dtype=dtype, device="meta")


@pytest.mark.parametrize("num_rows", [1, 2, 3, 4])
@pytest.mark.parametrize(("n", "k"), LLAMA_8B_SHAPES)
def test_decode_batches_of_llama_shapes_take_the_gemv_up_to_max_rows(
    num_rows: int, n: int, k: int
) -> None:
    # At 3-4 rows a 4-row variant lost to cuBLAS at every shape: those stay with torch.
    expected = num_rows <= gemv.MAX_ROWS
    assert gemv.serves(meta(num_rows, k), meta(n, k), None) is expected
    assert (gemv.choose_config(num_rows, n, k) is not None) is expected


def test_unsupported_inputs_are_left_to_torch() -> None:
    x, weight = meta(1, 4096), meta(4096, 4096)
    assert gemv.serves(x, weight, None)
    assert gemv.serves(x.half(), weight.half(), meta(4096, dtype=torch.float16))
    assert not gemv.serves(meta(gemv.MAX_ROWS + 1, 4096), weight, None)  # a prefill
    assert not gemv.serves(x.float(), weight.float(), None)  # float32: not tuned
    assert not gemv.serves(x, weight.half(), None)  # mixed dtypes
    assert not gemv.serves(x, meta(4096, 4096).t(), None)  # column-major weight
    assert not gemv.serves(meta(1, 8192)[:, ::2], weight, None)  # strided x
    assert not gemv.serves(meta(1, 2, 4096), weight, None)  # 3-D x
    assert not gemv.serves(x, weight, meta(4096, dtype=torch.float32))  # bias dtype


@pytest.mark.parametrize("num_rows", [1, 4, 64])
def test_linear_on_the_cpu_is_torch(num_rows: int) -> None:
    x, weight, bias = torch.randn(num_rows, 48), torch.randn(20, 48), torch.randn(20)
    assert torch.equal(ops.linear(x, weight, bias), F.linear(x, weight, bias))
    assert torch.equal(reference.linear(x, weight, None), F.linear(x, weight))


def test_gemv_rejects_bad_arguments() -> None:
    x, weight = torch.randn(2, 16), torch.randn(8, 16)
    with pytest.raises(ValueError, match="1 to 2 rows"):
        gemv.gemv(torch.randn(3, 16), weight)
    with pytest.raises(ValueError, match="weight"):
        gemv.gemv(x, torch.randn(8, 15))
    with pytest.raises(ValueError, match="share a dtype"):
        gemv.gemv(x, weight.half())
    with pytest.raises(ValueError, match="bias"):
        gemv.gemv(x, weight, torch.randn(7))
    with pytest.raises(ValueError, match="out"):
        gemv.gemv(x, weight, out=torch.empty(2, 9))
    with pytest.raises(ValueError, match="contiguous"):
        gemv.gemv(x, torch.randn(16, 8).t())
    with pytest.raises(ValueError, match="out"):
        reference.gemv(x, weight, out=torch.empty(3, 8))


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "k"), LLAMA_8B_SHAPES)
def test_gemv_gpu_llama_shapes(
    n: int,
    k: int,
    cuda: torch.device,
    assert_relative_error: Callable[[torch.Tensor, torch.Tensor, float], None],
) -> None:
    weight = torch.randn(n, k, dtype=torch.bfloat16, device=cuda)
    for num_rows in range(1, gemv.MAX_ROWS + 1):
        x = torch.randn(num_rows, k, dtype=torch.bfloat16, device=cuda)
        expected = x.double() @ weight.double().T
        out = torch.full((num_rows, n), float("nan"), dtype=torch.bfloat16, device=cuda)
        assert_relative_error(gemv.gemv(x, weight, out=out), expected, 1e-2)
        assert_relative_error(ops.linear(x, weight, None), expected, 1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gemv_gpu_tails_bias_and_float32_logits(
    dtype: torch.dtype,
    cuda: torch.device,
    assert_relative_error: Callable[[torch.Tensor, torch.Tensor, float], None],
) -> None:
    weight = torch.randn(1001, 1030, dtype=dtype, device=cuda)  # neither divides a block
    bias = torch.randn(1001, dtype=dtype, device=cuda)
    for num_rows in range(1, gemv.MAX_ROWS + 1):
        x = torch.randn(num_rows, 1030, dtype=dtype, device=cuda)
        expected = x.double() @ weight.double().T + bias.double()
        assert_relative_error(ops.linear(x, weight, bias), expected, 1e-2)
        logits = torch.empty(num_rows, 1001, dtype=torch.float32, device=cuda)
        gemv.gemv(x, weight, out=logits)
        assert_relative_error(logits, expected - bias.double(), 1e-5)


@pytest.mark.gpu
def test_gemv_gpu_replays_in_a_cuda_graph(cuda: torch.device) -> None:
    weight = torch.randn(4096, 4096, dtype=torch.bfloat16, device=cuda)
    x = torch.randn(1, 4096, dtype=torch.bfloat16, device=cuda)
    ops.linear(x, weight, None)  # compiled outside the capture, as the runner's warm-up does
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ops.linear(x, weight, None)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.testing.assert_close(out, F.linear(x, weight), rtol=1.6e-2, atol=1e-1)


def test_gemv_table_override_is_seen_by_the_dispatcher_and_restored() -> None:
    key = (1, 4096, 4096)
    before = gemv.choose_config(*key)
    other = next(config for config in bench_gemv_chain.SWEEP if config != before)
    with pytest.raises(RuntimeError), bench_gemv_chain.gemv_table({key: other}):
        assert gemv.choose_config(*key) == other
        assert gemv.choose_config(2, 4096, 4096) == gemv._GENERIC[2]  # other rows untouched
        raise RuntimeError("a failing capture")
    assert gemv.choose_config(*key) == before


def test_sweep_covers_the_chain_projections_and_the_table_shapes() -> None:
    projections = bench_gemv_chain.chain_projections(bench_chain.ChainShape())
    assert sorted(projections.values()) == sorted(LLAMA_8B_SHAPES)
    for config in bench_gemv_chain.SWEEP:
        # every Llama-3.1-8B shape divides the tile, so the precompiled variant is the one used
        assert all(n % config.block_n == 0 and k % config.block_k == 0 for n, k in LLAMA_8B_SHAPES)


def test_decode_chain_with_an_output_head_ends_in_logits_on_the_cpu() -> None:
    shape = bench_chain.ChainShape(hidden=64, num_heads=4, num_kv_heads=2, head_dim=16,
                                   intermediate=96, vocab=80)  # fmt: skip
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    layer = bench_chain.make_layer(shape, 3, torch.float32, cpu)
    head = bench_chain.make_head(shape, torch.float32, cpu)
    step = bench_chain.make_step(shape, 20, cpu)
    x, residual = torch.randn(1, shape.hidden), torch.randn(1, shape.hidden)
    body, body_residual = bench_chain.DecodeChain([layer], 2, step, shape).run(x, residual)
    # the same step again (its cache write is idempotent), now with the head
    logits, _ = bench_chain.DecodeChain([layer], 2, step, shape, head).run(x, residual)
    h, _ = reference.fused_add_rms_norm(body, body_residual, head.norm, bench_chain.EPS)
    assert logits.shape == (1, shape.vocab)
    torch.testing.assert_close(logits, F.linear(h, head.weight))
