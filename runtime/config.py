"""The engine's configuration, grouped by subject (model, cache, scheduler, device, load).

Everything here is resolved: no "auto", no None meaning "choose for me". `EngineArgs`
(engine_args.py) turns what a user passed to `LLM(...)` or `llmservice serve` into this.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmservice.runtime.model_config import ModelConfig
from llmservice.scheduler import SchedulerConfig


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The paged KV cache."""

    block_size: int = 16
    """Tokens per KV block."""
    enable_prefix_caching: bool = True
    """Reuse computed full blocks of identical prefixes across requests."""
    gpu_memory_utilization: float = 0.9
    """Fraction of GPU memory the engine may use (weights, activations and KV cache)."""
    num_blocks_override: int | None = None
    """Use exactly this many blocks (null block included) instead of sizing from memory."""


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """Where the model runs and with which kernels."""

    device: torch.device
    """torch device ("cpu" or "cuda[:i]")."""
    kernel_ops: str | None = None
    """Kernel set of `kernel_ops.KERNEL_OPS`; None picks the device's default."""
    enforce_eager: bool = False
    """Never capture CUDA graphs (every step runs eagerly); only matters on CUDA."""
    max_cuda_graph_batch_size: int = 1024
    """Decode batches up to this many sequences replay a captured CUDA graph (vLLM stops at
    512; W1's decode batches reach ~580 sequences on an H100, which ran eagerly at 512)."""


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """How the weights are obtained."""

    load_format: str = "auto"
    """"auto" reads safetensors from the model folder; "dummy" makes random weights."""
    seed: int = 0
    """Seed of dummy weights and of the sampler's shared generator."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything an `EngineCore` needs to start."""

    model: ModelConfig
    """The model's shape and numerics."""
    cache: CacheConfig
    """The paged KV cache."""
    scheduler: SchedulerConfig
    """Batch limits and policy."""
    device: DeviceConfig
    """Device and kernels."""
    load: LoadConfig
    """Weights source and seed."""
