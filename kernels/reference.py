"""Pure-torch reference implementations of the model's kernels (the oracle; the CPU path).

Every Triton kernel module in this package implements one of these functions with the same
signature and semantics, and is tested against it. The CPU engine runs on these functions, so
they are vectorized per sequence rather than per token.

KV cache layout, per layer: `k_cache`, `v_cache` each `(num_blocks, block_size, num_kv_heads,
head_dim)`; a slot is `block_id * block_size + offset`. Block id 0 is the null block the runner
pads block tables with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def write_kv_cache(
    key: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    value: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    slot_mapping: torch.Tensor,  # (num_tokens,) int64; a negative slot is skipped (padding)
) -> None:
    """Stores each token's key and value at its slot of the paged cache."""
    check_kv_write_shapes(key, value, k_cache, v_cache, slot_mapping)
    block_size = k_cache.shape[1]
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    # NOTE: indexing (block, offset) rather than a flat view keeps this correct for caches that
    # are views (kv_cache[0] of the stacked tensor is one, and need not be contiguous).
    blocks, offsets = slots // block_size, slots % block_size
    k_cache[blocks, offsets] = key[keep].to(k_cache.dtype)
    v_cache[blocks, offsets] = value[keep].to(v_cache.dtype)


def paged_attention(
    query: torch.Tensor,  # (num_tokens, num_heads, head_dim): the new tokens, flat
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    block_tables: torch.Tensor,  # (num_seqs, max_blocks_per_seq) int32, padded with 0
    seq_lens: torch.Tensor,  # (num_seqs,) int32: context length including the new tokens
    query_start_loc: torch.Tensor,  # (num_seqs + 1,) int32: offsets of each sequence's tokens
    scale: float,
    out: torch.Tensor | None = None,  # (num_tokens, num_heads, head_dim)
    *,
    num_decodes: int = 0,
    new_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Causal attention of each sequence's new tokens over its whole paged context.

    Sequence i's new tokens sit at positions [seq_lens[i] - q_len_i, seq_lens[i]) and attend to
    every position up to their own (the cached prefix included). Their K/V must already be in
    the cache. Computed in float32; returns (num_tokens, num_heads, head_dim) in query's dtype.
    Two hints that fast kernels use and the result does not depend on: `num_decodes` says the
    first sequences have one new token each (the batch can be split); `new_kv` holds the new
    tokens' (key, value) as written to the cache (read there in rows, not through the block
    table). This reference reads the cache.
    """
    check_attention_shapes(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out)
    kv_shape = (query.shape[0], k_cache.shape[2], k_cache.shape[3])
    if new_kv is not None and any(t.shape != kv_shape for t in new_kv):
        raise ValueError(f"new_kv key and value must be {kv_shape}")
    if not 0 <= num_decodes <= seq_lens.shape[0]:
        raise ValueError(f"num_decodes must be in [0, {seq_lens.shape[0]}], got {num_decodes}")
    num_heads, head_dim = query.shape[1], query.shape[2]
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    if out is None:
        out = torch.empty_like(query)
    starts = query_start_loc.tolist()
    lens = seq_lens.tolist()
    for i, seq_len in enumerate(lens):
        q_start, q_end = starts[i], starts[i + 1]
        q_len = q_end - q_start
        if q_len == 0:
            continue
        if q_len > seq_len:
            raise ValueError(f"sequence {i} has {q_len} new tokens but seq_len {seq_len}")
        num_blocks = -(-seq_len // block_size)
        blocks = block_tables[i, :num_blocks].long()
        # (seq_len, num_kv_heads, head_dim) -> (num_kv_heads, seq_len, head_dim)
        k = k_cache[blocks].reshape(-1, num_kv_heads, head_dim)[:seq_len].transpose(0, 1)
        v = v_cache[blocks].reshape(-1, num_kv_heads, head_dim)[:seq_len].transpose(0, 1)
        q = query[q_start:q_end].transpose(0, 1)  # (num_heads, q_len, head_dim)
        # Query j sits at position seq_len - q_len + j and sees keys at positions <= its own.
        q_pos = torch.arange(seq_len - q_len, seq_len, device=query.device)
        k_pos = torch.arange(seq_len, device=query.device)
        mask = k_pos[None, :] <= q_pos[:, None]  # (q_len, seq_len)
        o = F.scaled_dot_product_attention(
            q.float(),
            k.float(),
            v.float(),
            attn_mask=mask,
            scale=scale,
            enable_gqa=num_heads != num_kv_heads,
        )  # (num_heads, q_len, head_dim)
        out[q_start:q_end] = o.transpose(0, 1).to(out.dtype)
    return out


def cascade_attention(
    query: torch.Tensor,  # (num_seqs, num_heads, head_dim): one new token per sequence
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    block_tables: torch.Tensor,  # (num_seqs, max_blocks_per_seq) int32, padded with 0
    seq_lens: torch.Tensor,  # (num_seqs,) int32: context length including the new token
    query_start_loc: torch.Tensor,  # (num_seqs + 1,) int32
    scale: float,
    prefix: torch.Tensor,  # (2,) int32 on the query's device: prefix_blocks, prefix_row
    out: torch.Tensor | None = None,  # (num_seqs, num_heads, head_dim)
) -> torch.Tensor:
    """paged_attention of a decode batch whose sequences share prefix blocks (cascade attention).

    The shared prefix is `block_tables[prefix_row, :prefix_blocks]`; the two numbers come as a
    device tensor so a captured CUDA graph can replay any prefix. A fast implementation reads
    the prefix once for every sequence whose table starts with those blocks and whose context
    goes past them, and each sequence's other keys on their own; the result is the same
    function as paged_attention, which is what this reference computes (after checking the
    prefix's values, which the fast path cannot do without a device sync).
    """
    check_attention_shapes(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out)
    check_cascade_prefix(query, block_tables, prefix)
    prefix_blocks, prefix_row = (int(v) for v in prefix.tolist())
    check_cascade_values(block_tables, prefix_blocks, prefix_row)
    return paged_attention(
        query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, out
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension (HF Llama's): normalized and scaled in float32."""
    check_norm_shapes(x, weight)
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (normed * weight.float()).to(x.dtype)


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (rms_norm(x + residual), x + residual); the sum is rounded to x's dtype first."""
    if residual.shape != x.shape:
        raise ValueError(f"residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
    summed = x + residual
    return rms_norm(summed, weight, eps), summed


def rotary_embedding(
    positions: torch.Tensor,  # (num_tokens,) int64
    query: torch.Tensor,  # (num_tokens, num_heads, head_dim)
    key: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    cos_sin_cache: torch.Tensor,  # (max_positions, head_dim) float32 = [cos | sin]
) -> tuple[torch.Tensor, torch.Tensor]:
    """NeoX ("rotate half") rotary embedding as HF Llama/Qwen, in float32; returns new tensors."""
    check_rotary_shapes(positions, query, key, cos_sin_cache)
    half = cos_sin_cache.shape[1] // 2
    cos_sin = cos_sin_cache[positions.long()].float()  # (num_tokens, head_dim)
    cos = cos_sin[:, None, :half]  # (num_tokens, 1, head_dim / 2)
    sin = cos_sin[:, None, half:]
    return _rotate(query, cos, sin), _rotate(key, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """(..., 2 * d) -> (..., d): silu(x[..., :d]) * x[..., d:], computed in float32."""
    if x.shape[-1] % 2:
        raise ValueError(f"silu_and_mul needs an even last dimension, got {x.shape[-1]}")
    d = x.shape[-1] // 2
    return (F.silu(x[..., :d].float()) * x[..., d:].float()).to(x.dtype)


def linear(
    x: torch.Tensor,  # (..., in_features)
    weight: torch.Tensor,  # (out_features, in_features)
    bias: torch.Tensor | None = None,  # (out_features,)
) -> torch.Tensor:
    """The model's projections: x @ weight.T (+ bias), torch's matmul (cuBLAS on the GPU)."""
    return F.linear(x, weight, bias)


def linear_silu_and_mul(
    x: torch.Tensor,  # (num_rows, K)
    weight: torch.Tensor,  # (2 * d, K): [gate; up], as gate_up_proj packs them
    bias: torch.Tensor | None = None,  # (2 * d,)
) -> torch.Tensor:
    """The gate/up half of a SwiGLU MLP: silu_and_mul(linear(x, weight, bias)), (num_rows, d)."""
    check_gated_linear_args(x, weight, bias)
    return silu_and_mul(linear(x, weight, bias))


def fuses_gated_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> bool:
    """Whether linear_silu_and_mul skips the 2 * d-wide product: never here (the model then
    bounds that activation by cutting long batches into chunks)."""
    return False


def linear_add_(
    x: torch.Tensor,  # (num_rows, in_features)
    weight: torch.Tensor,  # (out_features, in_features)
    bias: torch.Tensor | None,  # (out_features,)
    residual: torch.Tensor,  # (num_rows, out_features): updated in place
) -> torch.Tensor:
    """residual += linear(x, weight, bias), in place; returns residual. The projections that
    close a sublayer (o_proj, down_proj) feed the residual stream this way."""
    check_linear_add_args(x, weight, residual)
    return residual.add_(linear(x, weight, bias))


def fuses_residual_add(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> bool:
    """Whether linear_add_ adds inside the GEMM, so the model should norm the residual after it
    rather than leave the add to fused_add_rms_norm: never here (the add is a separate pass)."""
    return False


def gemv(
    x: torch.Tensor,  # (num_rows, K): a few rows (decode tokens)
    weight: torch.Tensor,  # (N, K)
    bias: torch.Tensor | None = None,  # (N,)
    out: torch.Tensor | None = None,  # (num_rows, N), any float dtype
) -> torch.Tensor:
    """linear of a few rows, written into `out` (rounded to its dtype) when one is given."""
    check_gemv_args(x, weight, bias, out)
    result = linear(x, weight, bias)
    if out is None:
        return result
    return out.copy_(result)


# --- input checks shared with the Triton modules (they must reject what the oracle rejects) ---


def check_kv_write_shapes(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Raises ValueError unless the arguments of write_kv_cache agree with each other."""
    if key.dim() != 3 or key.shape != value.shape:
        raise ValueError(
            f"key and value must both be (num_tokens, num_kv_heads, head_dim), got "
            f"{tuple(key.shape)} and {tuple(value.shape)}"
        )
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"k_cache and v_cache must both be (num_blocks, block_size, num_kv_heads, head_dim), "
            f"got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    if k_cache.shape[2:] != key.shape[1:]:
        raise ValueError(
            f"cache heads/head_dim {tuple(k_cache.shape[2:])} != key's {tuple(key.shape[1:])}"
        )
    if slot_mapping.shape != (key.shape[0],):
        raise ValueError(f"slot_mapping must be ({key.shape[0]},), got {tuple(slot_mapping.shape)}")


def check_attention_shapes(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    out: torch.Tensor | None,
) -> None:
    """Raises ValueError unless the arguments of paged_attention agree with each other."""
    if query.dim() != 3:
        raise ValueError(
            f"query must be (num_tokens, num_heads, head_dim), got {tuple(query.shape)}"
        )
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"k_cache and v_cache must both be (num_blocks, block_size, num_kv_heads, head_dim), "
            f"got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    num_heads, head_dim = query.shape[1], query.shape[2]
    num_kv_heads = k_cache.shape[2]
    if k_cache.shape[3] != head_dim:
        raise ValueError(f"cache head_dim {k_cache.shape[3]} != query head_dim {head_dim}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
    num_seqs = seq_lens.shape[0]
    if seq_lens.dim() != 1 or block_tables.dim() != 2 or block_tables.shape[0] != num_seqs:
        raise ValueError(
            f"block_tables must be (num_seqs, max_blocks) and seq_lens (num_seqs,), got "
            f"{tuple(block_tables.shape)} and {tuple(seq_lens.shape)}"
        )
    if query_start_loc.shape != (num_seqs + 1,):
        raise ValueError(
            f"query_start_loc must be ({num_seqs + 1},), got {tuple(query_start_loc.shape)}"
        )
    if out is not None and out.shape != query.shape:
        raise ValueError(f"out shape {tuple(out.shape)} != query shape {tuple(query.shape)}")


def check_cascade_prefix(
    query: torch.Tensor, block_tables: torch.Tensor, prefix: torch.Tensor
) -> None:
    """Raises ValueError unless the batch is one token per sequence and `prefix` is a (2,) int32
    tensor on the query's device (its values are checked by check_cascade_values)."""
    num_seqs = block_tables.shape[0]
    if query.shape[0] != num_seqs:
        raise ValueError(
            f"cascade attention needs one query token per sequence, got {query.shape[0]} "
            f"for {num_seqs}"
        )
    if prefix.shape != (2,) or prefix.dtype != torch.int32 or prefix.device != query.device:
        raise ValueError(
            "prefix must be a (2,) int32 tensor (prefix_blocks, prefix_row) on the query's "
            f"device, got {tuple(prefix.shape)} {prefix.dtype} on {prefix.device}"
        )


def check_cascade_values(block_tables: torch.Tensor, prefix_blocks: int, prefix_row: int) -> None:
    """Raises ValueError unless the shared prefix is 1..width leading blocks of a batch row."""
    num_seqs, width = block_tables.shape
    if not 1 <= prefix_blocks <= width:
        raise ValueError(
            f"prefix_blocks must be in [1, {width}] (table width), got {prefix_blocks}"
        )
    if not 0 <= prefix_row < num_seqs:
        raise ValueError(f"prefix_row must be in [0, {num_seqs}), got {prefix_row}")


def check_gemv_args(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor | None
) -> None:
    """Raises ValueError unless the arguments of gemv agree with each other."""
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"gemv needs x (num_rows, K) and weight (N, K), got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        bias_dtype = None if bias is None else bias.dtype
        raise ValueError(
            f"x, weight and bias must share a dtype, got {x.dtype}, {weight.dtype}, {bias_dtype}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    if out is not None and out.shape != (x.shape[0], weight.shape[0]):
        raise ValueError(f"out must be ({x.shape[0]}, {weight.shape[0]}), got {tuple(out.shape)}")


def check_gated_linear_args(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> None:
    """Raises ValueError unless the arguments of linear_silu_and_mul agree with each other."""
    check_gemv_args(x, weight, bias, None)
    if weight.shape[0] % 2:
        raise ValueError(
            f"linear_silu_and_mul needs [gate; up] rows (an even count), got {weight.shape[0]}"
        )


def check_linear_add_args(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor) -> None:
    """Raises ValueError unless residual has the shape and dtype of linear(x, weight)."""
    if residual.shape != (*x.shape[:-1], weight.shape[0]) or residual.dtype != x.dtype:
        raise ValueError(
            f"residual {tuple(residual.shape)} {residual.dtype} does not match linear of x "
            f"{tuple(x.shape)} {x.dtype} and weight {tuple(weight.shape)}"
        )


def check_norm_shapes(x: torch.Tensor, weight: torch.Tensor) -> None:
    """Raises ValueError unless weight matches x's last dimension."""
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight shape {tuple(weight.shape)} != ({x.shape[-1]},)")


def check_rotary_shapes(
    positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor, cos_sin_cache: torch.Tensor
) -> None:
    """Raises ValueError unless the arguments of rotary_embedding agree with each other."""
    num_tokens = positions.shape[0]
    if positions.dim() != 1 or query.dim() != 3 or key.dim() != 3:
        raise ValueError("positions must be 1-D, query and key 3-D (num_tokens, heads, head_dim)")
    if query.shape[0] != num_tokens or key.shape[0] != num_tokens:
        raise ValueError(
            f"query {tuple(query.shape)} and key {tuple(key.shape)} must have {num_tokens} tokens"
        )
    head_dim = query.shape[2]
    if key.shape[2] != head_dim or cos_sin_cache.dim() != 2 or cos_sin_cache.shape[1] != head_dim:
        raise ValueError(
            f"head_dim mismatch: query {head_dim}, key {key.shape[2]}, "
            f"cos_sin_cache {tuple(cos_sin_cache.shape)}"
        )
    if head_dim % 2:
        raise ValueError(f"rotary head_dim must be even, got {head_dim}")
