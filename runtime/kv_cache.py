"""The paged KV cache as torch tensors, and how many blocks fit in the memory budget.

Layout per layer (INTERFACES.md section 3): `(2, num_blocks, block_size, num_kv_heads, head_dim)`,
K at index 0 and V at index 1. Block 0 is the null block the runner pads block tables with.

Budget: on CUDA, `gpu_memory_utilization` of the device's memory minus what the weights and a
profiling forward pass took; on the CPU, `CPU_KV_CACHE_BYTES` (4 GiB, like vLLM's default
`VLLM_CPU_KVCACHE_SPACE`), at most a quarter of the machine's memory, and never more blocks
than `max_num_seqs` sequences of `max_model_len` tokens can use.
"""

from __future__ import annotations

import contextlib
import os

import torch

from llmservice.runtime.model_config import ModelConfig

CPU_KV_CACHE_BYTES = 4 * 1024**3


def bytes_per_block(config: ModelConfig, block_size: int) -> int:
    """Bytes of K and V of one block across all layers."""
    elements = 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim
    return elements * config.dtype.itemsize


def max_useful_blocks(config: ModelConfig, block_size: int, max_num_seqs: int) -> int:
    """Blocks that `max_num_seqs` full-length sequences could use, plus the null block."""
    return max_num_seqs * -(-config.max_model_len // block_size) + 1


def cpu_num_blocks(config: ModelConfig, block_size: int, max_num_seqs: int) -> int:
    """The block count of the CPU budget (see the module docstring)."""
    budget = CPU_KV_CACHE_BYTES
    # Platforms without sysconf keep the fixed budget.
    with contextlib.suppress(ValueError, OSError):
        budget = min(budget, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4)
    by_memory = budget // bytes_per_block(config, block_size)
    return int(min(by_memory, max_useful_blocks(config, block_size, max_num_seqs)))


def cuda_num_blocks(
    config: ModelConfig,
    block_size: int,
    device: torch.device,
    gpu_memory_utilization: float,
    excluded_bytes: int = 0,
) -> int:
    """Blocks that fit in `gpu_memory_utilization` of the GPU after the peak usage so far.

    Call after loading the weights and one profiling forward pass at the largest batch, so the
    peak covers activations as well. The peak is torch's peak allocation less `excluded_bytes`
    (the profiling pass's own throw-away KV cache), plus what is held outside torch's allocator
    (the CUDA context, cuBLAS workspaces).
    """
    free, total = torch.cuda.mem_get_info(device)
    outside_torch = max(total - free - torch.cuda.memory_reserved(device), 0)
    used_peak = torch.cuda.max_memory_allocated(device) - excluded_bytes + outside_torch
    free_for_cache = int(total * gpu_memory_utilization) - used_peak
    return max(free_for_cache // bytes_per_block(config, block_size), 0)


def allocate_kv_caches(
    config: ModelConfig, num_blocks: int, block_size: int, device: torch.device
) -> list[torch.Tensor]:
    """One zeroed `(2, num_blocks, block_size, num_kv_heads, head_dim)` tensor per layer."""
    shape = (2, num_blocks, block_size, config.num_kv_heads, config.head_dim)
    return [torch.zeros(shape, dtype=config.dtype, device=device) for _ in range(config.num_layers)]
