"""Builds the model and fills its weights: from safetensors files, or random ("dummy").

Checkpoints come single (`*.safetensors`) or sharded (`model.safetensors.index.json` naming the
shards). HF tensor names map one to one onto ours except q/k/v and gate/up, which land in row
ranges of the packed matrices. Every parameter must be filled exactly: a missing file, a missing
or unexpected tensor, or a shape mismatch raises an error that names it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from llmservice.runtime.kernel_ops import KernelOps
from llmservice.runtime.model_config import ModelConfig
from llmservice.runtime.models.decoder import DecoderForCausalLM

LOAD_FORMATS = ("auto", "dummy")
# Tensors some checkpoints carry that are derived, not learned.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# Standard deviation of dummy weights (matrices); norms are ones and biases zeros.
_DUMMY_STD = 0.02


def load_model(
    config: ModelConfig, load_format: str, ops: KernelOps, device: torch.device, seed: int
) -> DecoderForCausalLM:
    """The model on `device` with weights from `config.path` or random ones (load_format="dummy")."""
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"load_format must be one of {LOAD_FORMATS}, got {load_format!r}")
    # Check the files before allocating anything.
    files = [] if load_format == "dummy" else find_safetensors_files(Path(config.path))
    model = DecoderForCausalLM(config, ops, device)
    with torch.no_grad():
        if load_format == "dummy":
            init_dummy_weights(model, seed)
        else:
            load_safetensors_weights(model, files)
    return model.eval()


def find_safetensors_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files; FileNotFoundError naming what is missing."""
    index_file = folder / "model.safetensors.index.json"
    if index_file.is_file():
        weight_map: dict[str, str] = json.loads(index_file.read_text())["weight_map"]
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [str(f.name) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{index_file} names weight files that are missing: {', '.join(missing)}"
            )
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"no *.safetensors weight files in {str(folder)!r} "
            "(load_format='dummy' makes random weights from config.json alone)"
        )
    return files


def load_safetensors_weights(model: DecoderForCausalLM, files: list[Path]) -> None:
    """Copy every checkpoint tensor into its parameter (or its rows of a packed parameter)."""
    params = dict(model.named_parameters())
    packed = model.packed_shards()
    expected = _expected_shards(params, packed)
    loaded: dict[str, set[int]] = {name: set() for name in params}
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for hf_name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if hf_name.endswith(_IGNORED_SUFFIXES) or (
                    hf_name == "lm_head.weight" and model.config.tie_word_embeddings
                ):
                    continue
                name, start, rows = _map_name(hf_name, packed)
                param = params.get(name)
                if param is None:
                    raise ValueError(f"{file.name}: unexpected tensor {hf_name!r} for this model")
                tensor = f.get_tensor(hf_name)
                target = param if rows is None else param[start : start + rows]
                if tensor.shape != target.shape:
                    raise ValueError(
                        f"{file.name}: tensor {hf_name!r} has shape {tuple(tensor.shape)}, "
                        f"the model expects {tuple(target.shape)}"
                    )
                target.copy_(tensor)
                loaded[name].add(start)
    missing = [
        hf_name
        for name, shards in expected.items()
        for start, hf_name in shards.items()
        if start not in loaded[name]
    ]
    if missing:
        raise ValueError(f"the checkpoint lacks tensors: {', '.join(sorted(missing))}")


def init_dummy_weights(model: DecoderForCausalLM, seed: int) -> None:
    """Random weights from a seeded generator: N(0, 0.02) matrices, unit norms, zero biases."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if param.dim() > 1:
            param.normal_(0.0, _DUMMY_STD, generator=generator)
        elif name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            param.zero_()


def _map_name(hf_name: str, packed: dict[str, tuple[str, int, int]]) -> tuple[str, int, int | None]:
    """HF tensor name -> (our parameter name, first row, rows or None for the whole tensor)."""
    parts = hf_name.split(".")
    for i, part in enumerate(parts):
        shard = packed.get(part)
        if shard is not None:
            packed_name, start, rows = shard
            return ".".join([*parts[:i], packed_name, *parts[i + 1 :]]), start, rows
    return hf_name, 0, None


def _expected_shards(
    params: dict[str, torch.nn.Parameter], packed: dict[str, tuple[str, int, int]]
) -> dict[str, dict[int, str]]:
    """Parameter name -> {first row: the HF tensor name that must fill it from there}."""
    shards_of_packed: dict[str, dict[int, str]] = {}
    for hf_part, (packed_name, start, _) in packed.items():
        shards_of_packed.setdefault(packed_name, {})[start] = hf_part
    expected: dict[str, dict[int, str]] = {}
    for name in params:
        parts = name.split(".")
        shards = shards_of_packed.get(parts[-2]) if len(parts) > 1 else None
        if shards is None:
            expected[name] = {0: name}
        else:
            expected[name] = {
                start: ".".join([*parts[:-2], hf_part, parts[-1]])
                for start, hf_part in shards.items()
            }
    return expected
