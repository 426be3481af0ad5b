"""Programmatic dependent launch (PDL): when the kernels use it, what each reads before it
waits for the kernels before it (checked in the sm_90 PTX, compiled on the CPU), and, on a
Hopper GPU, a decode step's chain of kernels giving the same result with and without PDL,
eagerly and replayed from a CUDA graph."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from llmservice.kernels import (
    activation,
    bench_chain,
    decode_attention,
    gemv,
    kv_cache_write,
    reference,
    rms_norm,
    rotary,
)
from llmservice.kernels.triton_utils import (
    next_power_of_2,
    pdl_launch_dependents,
    pdl_wait,
    use_pdl,
)

WAIT = "griddepcontrol.wait"
LAUNCH = "griddepcontrol.launch_dependents"
# Pointer element types where not bf16; every other parameter is an int32 (eps a float).
POINTER_TYPES = {
    "positions_ptr": "*i64",
    "slot_mapping_ptr": "*i64",
    "cos_sin_ptr": "*fp32",
    "block_tables_ptr": "*i32",
    "seq_lens_ptr": "*i32",
    "query_start_loc_ptr": "*i32",
    "context_starts_ptr": "*i32",
    "part_out_ptr": "*fp32",
    "part_lse_ptr": "*fp32",
}
FLOAT_ARGS = ("eps", "qk_scale")


def compile_ptx(kernel: triton.JITFunction, constexprs: dict[str, object], pdl: bool) -> str:
    """The kernel's PTX for an H100 (sm_90), compiled without a GPU, pointers and ints
    specialized as multiples of 16 as the launcher does for aligned tensors and sizes."""
    names = list(kernel.arg_names)
    constexprs = {**constexprs, "PDL": pdl}
    signature = {}
    for name in names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = POINTER_TYPES.get(name, "*bf16")
        else:
            signature[name] = "fp32" if name in FLOAT_ARGS else "i32"
    attrs = {
        (i,): [["tt.divisibility", 16]]
        for i, name in enumerate(names)
        if signature[name] not in ("constexpr", "fp32")
    }
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(
        source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "launch_pdl": pdl}
    )
    return str(compiled.asm["ptx"])


KERNELS: dict[str, tuple[triton.JITFunction, dict[str, object]]] = {
    "gemv": (
        gemv._gemv_kernel,
        {
            "ROWS": 1,
            "BLOCK_N": 8,
            "BLOCK_K": 1024,
            "EVEN_N": True,
            "EVEN_K": True,
            "HAS_BIAS": False,
            "EVICTION": "",
        },
    ),
    "fused_add_rms_norm": (rms_norm._rms_norm_kernel, {"BLOCK": 4096, "ADD_RESIDUAL": True}),
    "rotary": (
        rotary._rotary_kernel,
        {"HALF": 64, "HALF_PAD": 64, "HEADS_PAD": 32, "KV_HEADS_PAD": 8},
    ),
    "kv_cache_write": (
        kv_cache_write._write_kv_kernel,
        {"BLOCK_SIZE": 16, "HEADS_PAD": 8, "HEAD_DIM": 128, "HEAD_DIM_PAD": 128},
    ),
    "decode_split": (
        decode_attention._decode_split_kernel,
        {
            "BLOCK_SIZE": 16,
            "GROUP": 4,
            "GROUP_PAD": 16,
            "HEAD_DIM": 128,
            "BLOCK_N": 64,
            "SINGLE_SPLIT": False,
            "HAS_CONTEXT_START": False,
            "DOT_PRECISION": "ieee",
        },
    ),
    "decode_merge": (
        decode_attention._decode_merge_kernel,
        {"HEAD_DIM": 128, "PARTS_BLOCK": decode_attention.MERGE_PARTS_BLOCK},
    ),
    "silu_and_mul": (activation._silu_and_mul_kernel, {"BLOCK": activation.BLOCK}),
}
# Global loads a kernel issues before it waits: only what no kernel writes (weights).
LOADS_BEFORE_WAIT: dict[str, Callable[[int], bool]] = {
    "gemv": lambda n: n > 0,  # the first weight tile streams in while the previous kernel drains
    "fused_add_rms_norm": lambda n: n > 0,  # the norm's scale
    "rotary": lambda n: n == 0,  # positions, q and k all come from earlier kernels
    "kv_cache_write": lambda n: n == 0,  # the slot, k and v too
    "decode_split": lambda n: n == 0,  # q and the new K/V come from the kernels before it
    "decode_merge": lambda n: n == 0,  # the split kernel's partial results
    "silu_and_mul": lambda n: n == 0,  # the gate/up projection's output
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_pdl_kernels_read_only_weights_before_they_wait(name: str) -> None:
    kernel, constexprs = KERNELS[name]
    ptx = compile_ptx(kernel, constexprs, pdl=True)
    assert ptx.count(WAIT) == 1 and ptx.count(LAUNCH) == 1
    before_wait = ptx[: ptx.index(WAIT)]
    assert "st.global" not in before_wait  # an earlier kernel may still read what is written
    assert LOADS_BEFORE_WAIT[name](before_wait.count("ld.global")), before_wait[-2000:]
    # Without PDL the kernel carries neither instruction.
    plain = compile_ptx(kernel, constexprs, pdl=False)
    assert WAIT not in plain and LAUNCH not in plain


def test_pdl_is_off_away_from_cuda() -> None:
    assert not use_pdl(torch.device("cpu"))
    assert not use_pdl(torch.device("meta"))


SMALL = bench_chain.ChainShape(hidden=256, num_heads=4, num_kv_heads=2, head_dim=64,
                               intermediate=512)  # fmt: skip


def hopper(cuda: torch.device) -> torch.device:
    """The CUDA device if it runs PDL (Hopper or later); skips the test otherwise."""
    if torch.cuda.get_device_capability(cuda) < (9, 0):
        pytest.skip("PDL needs compute capability 9.0 or later")
    return cuda


def test_pdl_is_on_on_hopper_unless_switched_off(cuda: torch.device) -> None:
    device = hopper(cuda)
    with bench_chain.pdl_switched(True):
        assert use_pdl(device)
    with bench_chain.pdl_switched(False):
        assert not use_pdl(device)


@triton.jit
def _late_copy_kernel(src_ptr, dst_ptr, n, spins, BLOCK: tl.constexpr):
    """dst = src, written only after `spins` dependent steps (~2 ms for 2**20), having let the
    next kernel of the stream start at once: a PDL kernel after it that reads dst before its
    wait reads the old contents."""
    pdl_launch_dependents(True)
    acc = tl.program_id(0).to(tl.float32)
    for _ in range(spins):
        acc = acc * 0.5 + 1.0  # converges to 2; the compiler cannot drop the loop
    offs = tl.arange(0, BLOCK)
    value = tl.load(src_ptr + offs, mask=offs < n)
    tl.store(dst_ptr + offs, tl.where(acc > 0.0, value, 0.0), mask=offs < n)


@triton.jit
def _eager_copy_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr, WAIT: tl.constexpr):
    """dst = src, reading src before its wait unless WAIT: the harness's control."""
    offs = tl.arange(0, BLOCK)
    pdl_wait(WAIT)
    value = tl.load(src_ptr + offs, mask=offs < n)
    pdl_wait(not WAIT)  # a kernel after the writer may still read dst
    tl.store(dst_ptr + offs, value, mask=offs < n)


def write_late(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Copies src into the contiguous dst about 2 ms after the next kernel may start."""
    n = dst.numel()
    _late_copy_kernel[(1,)](src.reshape(-1), dst.view(-1), n, 2**20, BLOCK=next_power_of_2(n))


@pytest.mark.parametrize("wait", [False, True])
def test_the_late_writer_exposes_a_read_before_the_wait(cuda: torch.device, wait: bool) -> None:
    # The control: without the wait, a PDL kernel reads what was there before the writer.
    hopper(cuda)
    fresh, buffer = torch.randn(4096, device=cuda), torch.zeros(4096, device=cuda)
    out = torch.empty_like(buffer)
    for _ in range(2):  # the first launches compile: by then the writer has long finished
        buffer.zero_()
        write_late(buffer, fresh)
        _eager_copy_kernel[(1,)](buffer, out, 4096, BLOCK=4096, WAIT=wait, launch_pdl=True)
    assert torch.equal(out, fresh) is wait


def test_pdl_kernels_wait_for_the_kernel_that_writes_their_input(cuda: torch.device) -> None:
    device = hopper(cuda)
    # Every input an earlier kernel writes starts as NaN and is written late.
    inputs = torch.full((4, 4096), float("nan"), device=device, dtype=torch.bfloat16)
    fresh = torch.randn_like(inputs)
    weight = torch.randn(6144, 4096, device=device, dtype=torch.bfloat16) * 4096**-0.5
    norm_weight = torch.randn(4096, device=device, dtype=torch.bfloat16)
    positions = torch.tensor([37], device=device)
    cos_sin = bench_chain.make_step(bench_chain.ChainShape(), 64, device).cos_sin
    cache = torch.randn(2, 8, 16, 8, 128, device=device, dtype=torch.bfloat16)
    slots = torch.tensor([21], device=device)
    x, residual = inputs[0:1], inputs[1:2]
    q, k = inputs[0].view(1, 32, 128), inputs[1, :1024].view(1, 8, 128)
    v = inputs[2, :1024].view(1, 8, 128)

    def write_kv() -> torch.Tensor:
        kv_cache_write.write_kv_cache(k, v, cache[0], cache[1], slots)
        return cache[:, 1, 5].clone()  # slot 21: block 1, offset 5

    launches: dict[str, Callable[[], torch.Tensor]] = {
        "gemv": lambda: gemv.gemv(x, weight),
        "rms_norm": lambda: rms_norm.fused_add_rms_norm(x, residual, norm_weight, 1e-5)[0],
        "rotary": lambda: torch.cat(rotary.rotary_embedding(positions, q, k, cos_sin), 1),
        "kv_cache_write": write_kv,
    }
    results = {}
    with bench_chain.pdl_switched(True):
        for name, launch in launches.items():
            for _ in range(2):  # the first launch compiles
                inputs.fill_(float("nan"))
                write_late(inputs, fresh)
                results[name] = launch()
    assert torch.equal(inputs, fresh)  # the views now hold what the writer wrote
    expected = {
        "gemv": reference.gemv(x, weight, None),
        "rms_norm": reference.fused_add_rms_norm(x, residual, norm_weight, 1e-5)[0],
        "rotary": torch.cat(reference.rotary_embedding(positions, q, k, cos_sin), 1),
        "kv_cache_write": torch.stack([k[0], v[0]]),
    }
    for name, result in results.items():
        assert torch.isfinite(result).all(), name
        torch.testing.assert_close(result, expected[name], rtol=2e-2, atol=2e-2, msg=name)


def chain_inputs(
    shape: bench_chain.ChainShape, copies: int, num_layers: int, device: torch.device
) -> tuple[bench_chain.DecodeChain, torch.Tensor, torch.Tensor]:
    """Random layers over a 53-token context (the new token in the fourth block), x, residual."""
    torch.manual_seed(1)
    context = 3 * shape.block_size + 5
    num_blocks = 1 + -(-context // shape.block_size)
    layers = [
        bench_chain.make_layer(shape, num_blocks, torch.bfloat16, device) for _ in range(copies)
    ]
    step = bench_chain.make_step(shape, context, device)
    x = torch.randn(1, shape.hidden, device=device, dtype=torch.bfloat16)
    return bench_chain.DecodeChain(layers, num_layers, step, shape), x, torch.randn_like(x)


def on_cpu(layer: bench_chain.LayerWeights) -> bench_chain.LayerWeights:
    tensors = {name: getattr(layer, name).cpu() for name in layer.__dataclass_fields__}
    return bench_chain.LayerWeights(**tensors)


def test_decode_chain_with_pdl_matches_the_reference(
    cuda: torch.device, assert_relative_error: Callable[[torch.Tensor, torch.Tensor, float], None]
) -> None:
    device = hopper(cuda)
    chain, x, residual = chain_inputs(SMALL, 2, 6, device)
    cpu_chain = bench_chain.DecodeChain(
        [on_cpu(layer) for layer in chain.layers],  # before the chain writes the caches
        chain.num_layers,
        bench_chain.make_step(SMALL, int(chain.step.seq_lens[0]), torch.device("cpu")),
        SMALL,
    )
    expected, expected_residual = cpu_chain.run(x.cpu(), residual.cpu())
    with bench_chain.pdl_switched(True):
        out, out_residual = chain.run(x, residual)
        graph, graph_out = chain.capture(x, residual)
    graph_out.fill_(float("nan"))
    graph.replay()
    assert_relative_error(out.cpu(), expected, 2e-2)
    assert_relative_error(out_residual.cpu(), expected_residual, 2e-2)
    assert torch.equal(graph_out, out)  # the same kernels, replayed


@pytest.mark.slow
def test_llama_decode_chain_is_the_same_with_and_without_pdl(cuda: torch.device) -> None:
    # Llama-3.1-8B's layer sizes: the GEMVs run long enough for the next kernel's programs to
    # start early; one read before its wait would change the result.
    device = hopper(cuda)
    shape = bench_chain.ChainShape()
    chain, x, residual = chain_inputs(shape, 2, 8, device)
    outputs = []
    for enabled in (False, True):
        with bench_chain.pdl_switched(enabled):
            graph, out = chain.capture(x, residual)
        for _ in range(3):
            out.fill_(float("nan"))
            graph.replay()
            outputs.append(out.clone())
    assert torch.isfinite(outputs[0]).all()
    assert all(torch.equal(out, outputs[0]) for out in outputs[1:])
