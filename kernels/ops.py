"""The kernels the model runner calls: Triton on CUDA tensors, the torch reference elsewhere.

Each function has the signature of its `reference` twin (INTERFACES.md section 3) and picks
the implementation from the device of its first tensor argument. `paged_attention` is the
attention entry point: a batch with exactly one new token per sequence (all decodes) goes to
the split-KV decode kernel, anything else to the extend kernel. `cascade_attention` is the
decode path for batches whose sequences share prefix blocks (the runner decides when).

NOTE: the Triton modules are imported inside the CUDA branches, so CPU-only installs never
import Triton (importing it costs a second and it is absent on some platforms).
"""

from __future__ import annotations

import torch

from llmservice.kernels import reference


def write_kv_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Stores the new tokens' K/V at their slots; negative slots are skipped."""
    if not key.is_cuda:
        return reference.write_kv_cache(key, value, k_cache, v_cache, slot_mapping)
    from llmservice.kernels import kv_cache_write

    return kv_cache_write.write_kv_cache(key, value, k_cache, v_cache, slot_mapping)


def paged_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
    *,
    num_decodes: int = 0,
    new_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Causal paged attention of a flat mixed batch (see reference.paged_attention).

    NOTE: every sequence must have at least one new token; then num_tokens == num_seqs means
    every sequence has exactly one, which is decided from shapes alone (no device sync). In a
    mixed batch whose first `num_decodes` sequences have one new token each, those go to the
    decode kernel and the rest to the extend kernel: a decode fills 4 rows of a 256-row extend
    tile, so the extend kernel spends ~60x the matrix work on it that the decode kernel does.
    """
    args = (query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, out)
    if not query.is_cuda:
        return reference.paged_attention(*args, num_decodes=num_decodes, new_kv=new_kv)
    from llmservice.kernels import decode_attention, extend_attention

    num_seqs = seq_lens.shape[0]
    if query.shape[0] == num_seqs:
        return decode_attention.paged_attention(*args)
    if not 0 < num_decodes < num_seqs:
        return extend_attention.paged_attention(*args, new_kv=new_kv)
    if out is None:
        out = torch.empty_like(query)
    d = num_decodes
    decode_attention.paged_attention(
        query[:d], k_cache, v_cache, block_tables[:d], seq_lens[:d], query_start_loc[: d + 1],
        scale, out[:d],
    )  # fmt: skip
    # The extend kernel indexes query and out by query_start_loc, which keeps its offsets. Its
    # tiles follow the tail alone: counting the decodes' tokens would give short chunks behind
    # many decodes the prefill-heavy tiles.
    num_tokens = query.shape[0]
    config = extend_attention.default_config(
        query.shape[2], query.device, num_tokens - d, num_seqs - d,
        extend_attention.reads_new_kv_by_tma(new_kv),
    )  # fmt: skip
    return extend_attention.paged_attention(
        query, k_cache, v_cache, block_tables[d:], seq_lens[d:], query_start_loc[d:], scale, out,
        new_kv=new_kv, config=config,
    )  # fmt: skip


def cascade_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    prefix: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode attention reading `block_tables[prefix_row, :prefix_blocks]` (`prefix` holds the
    two) once for every sequence that starts with them (see reference.cascade_attention)."""
    args = (query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, prefix, out)
    if not query.is_cuda:
        return reference.cascade_attention(*args)
    from llmservice.kernels import cascade_attention as cascade

    return cascade.cascade_attention(*args)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension, float32 math."""
    if not x.is_cuda:
        return reference.rms_norm(x, weight, eps)
    from llmservice.kernels import rms_norm as triton_rms_norm

    return triton_rms_norm.rms_norm(x, weight, eps)


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (rms_norm(x + residual), x + residual)."""
    if not x.is_cuda:
        return reference.fused_add_rms_norm(x, residual, weight, eps)
    from llmservice.kernels import rms_norm as triton_rms_norm

    return triton_rms_norm.fused_add_rms_norm(x, residual, weight, eps)


def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    cos_sin_cache: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NeoX rotary embedding of query and key; returns new tensors."""
    if not query.is_cuda:
        return reference.rotary_embedding(positions, query, key, cos_sin_cache)
    from llmservice.kernels import rotary

    return rotary.rotary_embedding(positions, query, key, cos_sin_cache)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """(..., 2 * d) -> (..., d): silu(x[..., :d]) * x[..., d:]."""
    if not x.is_cuda:
        return reference.silu_and_mul(x)
    from llmservice.kernels import activation

    return activation.silu_and_mul(x)


def linear_silu_and_mul(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """silu_and_mul(linear(x, weight, bias)) for [gate; up] weight rows: one fused kernel where
    `fuses_gated_linear` says so, else linear (GEMV or cuBLAS) then the SiLU kernel."""
    if fuses_gated_linear(x, weight, bias):
        from llmservice.kernels import gated_linear

        return gated_linear.linear_silu_and_mul(x, weight)
    return silu_and_mul(linear(x, weight, bias))


def fuses_gated_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> bool:
    """Whether linear_silu_and_mul runs as one kernel that never holds the 2 * d-wide product
    (a CUDA tensor on Hopper or later, enough rows; gated_linear.serves)."""
    if not x.is_cuda:
        return False
    from llmservice.kernels import gated_linear

    return gated_linear.serves(x, weight, bias)


# Rows from which linear_add_ adds in cuBLAS's epilogue. Smaller batches (decode steps, most of
# them replayed CUDA graphs) keep the add in the fused add-RMSNorm kernel: at their size the
# norm's traffic is negligible, and their kernels stay the ones W1/W2 were measured with.
RESIDUAL_ADD_MIN_ROWS = 1024


def linear_add_(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor
) -> torch.Tensor:
    """residual += x @ weight.T (+ bias), in place; returns residual.

    Where `fuses_residual_add` says so the add happens in cuBLAS's epilogue (addmm with beta 1),
    and the norm that follows reads only the residual: of the add-RMSNorm's four passes over
    the rows, reading the product and writing the residual go, for one read of the residual
    inside the compute-bound GEMM. About 1% of W3's 16K-token steps (BENCHMARKS.md, "Residual
    add in the GEMM")."""
    if fuses_residual_add(x, weight, bias):
        reference.check_linear_add_args(x, weight, residual)
        return residual.addmm_(x, weight.t())
    return reference.linear_add_(x, weight, bias, residual)


def fuses_residual_add(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> bool:
    """Whether linear_add_ adds inside the GEMM: CUDA batches of at least RESIDUAL_ADD_MIN_ROWS
    rows without bias (shapes only, no device sync)."""
    return x.is_cuda and bias is None and x.dim() == 2 and x.shape[0] >= RESIDUAL_ADD_MIN_ROWS


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T (+ bias): the Triton GEMV for decode-sized CUDA batches, torch otherwise.

    The choice reads shapes, dtypes and layouts only (no device sync), so a captured CUDA graph
    replays the same kernel every time. More than gemv.MAX_ROWS rows (where cuBLAS measured
    faster), float32 and layouts the kernel does not read go to torch's matmul.
    """
    if x.is_cuda:
        from llmservice.kernels import gemv

        if gemv.serves(x, weight, bias):
            return gemv.gemv(x, weight, bias)
    return reference.linear(x, weight, bias)
