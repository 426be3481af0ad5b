"""How the LLMService spec becomes the runtime's command line and where the weights come from.

The pod runs `llmservice serve MODEL ...flags` (DESIGN.md section 2). MODEL depends on the source:
- `builtin:<name>` is passed as is (the weights ship in the image);
- `pvc://<claim>/<path>` mounts the claim read-only and passes the folder;
- `hf://<org>/<repo>` is downloaded by an init container (`hf download`, resumable) into the
  model cache volume, and the server is given that folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmservice.operator.resource import SERVER_PORT, LLMService

CACHE_DIR = "/models"
SOURCE_DIR = "/model-source"
API_KEY_ENV = "LLMSERVICE_API_KEY"


@dataclass(frozen=True)
class ModelLocation:
    """Where the server reads the weights from, and what the pod needs for that."""

    server_path: str
    """The MODEL argument of `llmservice serve`."""
    hf_repo: str | None = None
    """An org/repo to download first (hf:// sources)."""
    source_claim: str | None = None
    """A PersistentVolumeClaim to mount read-only at SOURCE_DIR (pvc:// sources)."""


def model_location(svc: LLMService) -> ModelLocation:
    source = svc.spec.model.source
    if source.startswith("hf://"):
        repo = source.removeprefix("hf://")
        revision = svc.spec.model.revision
        return ModelLocation(server_path=f"{CACHE_DIR}/hf/{repo}/{revision}", hf_repo=repo)
    if source.startswith("pvc://"):
        claim, _, path = source.removeprefix("pvc://").partition("/")
        folder = f"{SOURCE_DIR}/{path}".rstrip("/")
        return ModelLocation(server_path=folder, source_claim=claim)
    return ModelLocation(server_path=source)


def fetch_command(svc: LLMService) -> list[str]:
    """The init container's command for an hf:// source."""
    location = model_location(svc)
    if location.hf_repo is None:
        raise ValueError(f"spec.model.source {svc.spec.model.source!r} needs no download")
    return [
        "hf",
        "download",
        location.hf_repo,
        "--revision",
        svc.spec.model.revision,
        "--local-dir",
        location.server_path,
    ]


def server_args(svc: LLMService) -> list[str]:
    """The arguments after `llmservice serve`."""
    spec, engine = svc.spec, svc.spec.engine
    args = [
        model_location(svc).server_path,
        "--host=0.0.0.0",
        f"--port={SERVER_PORT}",
        f"--served-model-name={spec.model.name}",
        f"--tensor-parallel-size={engine.tensor_parallel_size}",
        f"--gpu-memory-utilization={engine.gpu_memory_utilization}",
        f"--dtype={engine.dtype}",
        f"--scheduling-policy={engine.scheduling_policy}",
        "--enable-prefix-caching" if engine.enable_prefix_caching else "--no-enable-prefix-caching",
        f"--shutdown-timeout={spec.shutdown_timeout_seconds}",
    ]
    optional = {
        "--max-model-len": engine.max_model_len,
        "--max-num-seqs": engine.max_num_seqs,
        "--max-num-batched-tokens": engine.max_num_batched_tokens,
        "--reasoning-parser": engine.reasoning_parser,
    }
    args += [f"{flag}={value}" for flag, value in optional.items() if value is not None]
    if spec.resources.gpus == 0:
        args.append("--device=cpu")
    # With spec.auth the key reaches the runtime only as the environment variable API_KEY_ENV
    # (filled from the Secret, see pod.py), which `llmservice serve` reads: never an argument,
    # which anyone who can list processes on the node could read.
    return args + list(engine.extra_args)
