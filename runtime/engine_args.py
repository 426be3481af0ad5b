"""`EngineArgs`: the engine's options as a user gives them, resolved into an `EngineConfig`.

The field names are those of `LLM(...)` (DESIGN.md section 2) and of `llmservice serve`'s flags;
None means "chosen for the device", as vLLM does: on CUDA 1024 sequences and 16K batched tokens
(an H100's vLLM defaults); on the CPU modest values that keep a step short.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from llmservice.runtime.builtin import resolve_model_path
from llmservice.runtime.config import CacheConfig, DeviceConfig, EngineConfig, LoadConfig
from llmservice.runtime.model_config import ModelConfig
from llmservice.scheduler import DEFAULT_HEADROOM, NO_HEADROOM, SchedulerConfig

# (max_num_seqs, max_num_batched_tokens) when the user leaves them None.
_DEVICE_DEFAULTS: dict[str, tuple[int, int]] = {"cuda": (1024, 16384), "cpu": (64, 2048)}
_POLICIES = ("fcfs", "priority")


@dataclass(frozen=True, slots=True)
class EngineArgs:
    """What `LLM(...)` and `llmservice serve` accept (None = chosen for the device)."""

    model: str
    """A Hugging Face model folder, or "builtin:<name>" for a model shipped with the package."""
    load_format: str = "auto"
    """"auto" (safetensors) or "dummy" (random weights from config.json)."""
    dtype: str = "auto"
    """"auto" (config.json's dtype), "float32", "bfloat16" or "float16"."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu" or "cuda"."""
    max_model_len: int | None = None
    """Tokens per sequence; None = the model's maximum."""
    gpu_memory_utilization: float = 0.9
    """Fraction of GPU memory the engine may use."""
    max_num_seqs: int | None = None
    """Sequences per step at most."""
    max_num_batched_tokens: int | None = None
    """Tokens per step at most (longer prompts are prefilled in chunks)."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of identical prompt prefixes."""
    tensor_parallel_size: int = 1
    """GPUs per model replica (only 1 is supported so far)."""
    seed: int = 0
    """Seed of dummy weights and of unseeded sampling."""
    scheduling_policy: str = "fcfs"
    """"fcfs" or "priority" (lower priority value first)."""
    block_size: int = 16
    """Tokens per KV block."""
    num_kv_blocks: int | None = None
    """Exactly this many KV blocks (tests use tiny pools to force preemption)."""
    enforce_eager: bool = False
    """Never capture CUDA graphs for decode batches (vLLM's flag)."""
    kernel_ops: str | None = None
    """Kernel set by name ("reference", "triton"); None = the device's default."""
    admission_headroom: bool = True
    """Admit a request only while the KV cache keeps room for the running requests' future
    output (scheduler/headroom.py); False admits whenever the prompt fits (vLLM's behaviour)."""

    def create_engine_config(self) -> EngineConfig:
        """Validate and resolve every option; ValueError naming the bad one."""
        if self.tensor_parallel_size != 1:
            raise ValueError(
                f"tensor_parallel_size={self.tensor_parallel_size} is not supported yet (only 1)"
            )
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.scheduling_policy not in _POLICIES:
            raise ValueError(
                f"scheduling_policy must be one of {_POLICIES}, got {self.scheduling_policy!r}"
            )
        _check_optional_positive("max_num_seqs", self.max_num_seqs)
        _check_optional_positive("max_num_batched_tokens", self.max_num_batched_tokens)
        _check_optional_positive("num_kv_blocks", self.num_kv_blocks)
        _check_optional_positive("block_size", self.block_size)
        device = resolve_device(self.device)
        path = resolve_model_path(self.model)
        if not path.is_dir():
            raise FileNotFoundError(f"model folder {self.model!r} does not exist")
        model = ModelConfig.from_pretrained(path, self.dtype, self.max_model_len)
        if self.dtype == "auto" and device.type == "cuda" and model.dtype == torch.float32:
            # As vLLM: float32 checkpoints are served in bfloat16 on GPUs unless asked otherwise.
            model = dataclasses.replace(model, dtype=torch.bfloat16)
        default_seqs, default_tokens = _DEVICE_DEFAULTS[device.type]
        return EngineConfig(
            model=model,
            cache=CacheConfig(
                block_size=self.block_size,
                enable_prefix_caching=self.enable_prefix_caching,
                gpu_memory_utilization=self.gpu_memory_utilization,
                num_blocks_override=self.num_kv_blocks,
            ),
            scheduler=SchedulerConfig(
                max_num_seqs=self.max_num_seqs or default_seqs,
                max_num_batched_tokens=self.max_num_batched_tokens or default_tokens,
                max_model_len=model.max_model_len,
                policy="priority" if self.scheduling_policy == "priority" else "fcfs",
                headroom=DEFAULT_HEADROOM if self.admission_headroom else NO_HEADROOM,
            ),
            device=DeviceConfig(
                device=device, kernel_ops=self.kernel_ops, enforce_eager=self.enforce_eager
            ),
            load=LoadConfig(load_format=self.load_format, seed=self.seed),
        )


def resolve_device(device: str) -> torch.device:
    """ "auto" -> CUDA when available else CPU; ValueError for CUDA without a GPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but no CUDA device is available")
    return torch.device(device)


def _check_optional_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
