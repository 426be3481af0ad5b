"""THE schema of the LLMService custom resource (spec and status), as pydantic models.

`crd.py` turns these models into the CRD's structural OpenAPI v3 schema (`llmservice crd`,
`crds/llmservice.yaml`); the operator and `llmservice render` parse resources with them. Field
names follow DESIGN.md section 4. Every default here is also the CRD's default, so the object the
API server stores and the object `render` parses are the same.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from llmservice.operator.kube_types import (
    LabelKey,
    LabelSelector,
    LabelValue,
    NetworkPolicyPeer,
    Toleration,
)
from llmservice.operator.rules import (
    CLAIM_XOR_SIZE,
    CLASS_NEEDS_SIZE,
    GPUS_COVER_TP,
    MIN_LE_MAX,
    MODEL_NAME,
    MODEL_SOURCE,
    REPLICAS_VS_AUTOSCALING,
    RESERVED_ARGS,
    RESERVED_FLAG,
    REVISION,
    ROLLOUT_CAN_PROGRESS,
    SOURCE_FORMAT,
    SOURCE_IMMUTABLE,
)
from llmservice.operator.schema_types import (
    DNS_SUBDOMAIN,
    EXTENDED_RESOURCE,
    CamelModel,
    IntOrPercent,
    PositiveQuantity,
    Quantity,
    SecretKeyRef,
    cel_rules,
    is_zero,
)


def _object(model: type[CamelModel], description: str) -> Any:
    """A nested object that is always present, defaulted to its fields' defaults.

    The default is the whole object, not {}: the API server checks a default against the CEL
    rules of its schema without filling in the inner defaults first.
    """
    default = model().model_dump(by_alias=True, exclude_none=True, mode="json")
    return Field(
        default_factory=model, description=description, json_schema_extra={"default": default}
    )


class ModelSpec(CamelModel):
    """Which model to serve and where its weights come from."""

    name: str = Field(
        pattern=MODEL_NAME,
        max_length=128,
        description="The name clients send as `model` (the runtime's --served-model-name).",
    )
    source: str = Field(
        max_length=512,
        description=(
            "Where the weights are: hf://<org>/<repo> (downloaded into the cache by an init "
            "container), pvc://<claim>/<path> (a folder on an existing PersistentVolumeClaim, "
            "mounted read-only) or builtin:<name> (shipped in the image). Immutable: changing "
            "the model in place would serve a different model under the same name; create a "
            "new LLMService instead."
        ),
        json_schema_extra=cel_rules(SOURCE_FORMAT, SOURCE_IMMUTABLE),
    )
    revision: str = Field(
        default="main",
        pattern=REVISION,
        max_length=128,
        description="Branch, tag or commit of an hf:// source (ignored for other sources).",
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the Hugging Face token for gated models."
    )

    @field_validator("source")
    @classmethod
    def _source_format(cls, source: str) -> str:
        SOURCE_FORMAT.require(re.fullmatch(MODEL_SOURCE, source) is not None)
        return source


class Resources(CamelModel):
    """What one replica (one pod) gets."""

    gpus: int = Field(
        default=1, ge=0, le=64, description="GPUs per pod (0 runs the model on the CPU)."
    )
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu",
        pattern=EXTENDED_RESOURCE,
        max_length=253,
        description="The extended resource the device plugin advertises (e.g. amd.com/gpu).",
    )
    cpu: Quantity = Field(default="8", description="CPU request per pod (no CPU limit is set).")
    memory: Quantity = Field(
        default="64Gi",
        description="Memory request and limit per pod; /dev/shm (spec.shmSize) counts against it.",
    )


class Engine(CamelModel):
    """Runtime settings, passed to `llmservice serve` as flags. Unset = the runtime chooses."""

    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        le=64,
        description="GPUs one model copy is split over (--tensor-parallel-size).",
    )
    max_model_len: int | None = Field(
        default=None, ge=16, le=10_000_000, description="Context length (default: the model's)."
    )
    gpu_memory_utilization: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Fraction of GPU memory for weights + KV cache, in (0, 1].",
    )
    max_num_seqs: int | None = Field(
        default=None,
        ge=1,
        le=65_536,
        description="Sequences per step (default: sized for the device).",
    )
    max_num_batched_tokens: int | None = Field(
        default=None,
        ge=16,
        le=10_000_000,
        description="Tokens per step (default: sized for the device).",
    )
    enable_prefix_caching: bool = Field(default=True, description="Reuse KV of shared prefixes.")
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        default="fcfs", description="fcfs, or priority (lower request priority value first)."
    )
    reasoning_parser: Literal["deepseek_r1", "qwen3"] | None = Field(
        default=None, description="Split reasoning into reasoning_content (reasoning models only)."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="Weight and activation dtype (auto: the checkpoint's)."
    )
    extra_args: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="More `llmservice serve` flags, appended as given.",
        json_schema_extra={
            "items": {"type": "string", "maxLength": 256},
            **cel_rules(RESERVED_ARGS),
        },
    )

    @field_validator("extra_args")
    @classmethod
    def _no_reserved_flags(cls, args: list[str]) -> list[str]:
        RESERVED_ARGS.require(not any(re.fullmatch(RESERVED_FLAG, arg) for arg in args))
        return args


class Autoscaling(CamelModel):
    """A HorizontalPodAutoscaler on one of the runtime's Prometheus metrics (per pod)."""

    model_config = CamelModel.model_config | {"json_schema_extra": cel_rules(MIN_LE_MAX)}

    enabled: bool = Field(default=False, description="Create the HorizontalPodAutoscaler.")
    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas.")
    metric: Literal["num_requests_waiting", "kv_cache_usage_perc", "num_requests_running"] = Field(
        default="num_requests_waiting",
        description=(
            "The llmservice:<metric> pods metric (through a custom-metrics adapter such as "
            "prometheus-adapter) whose per-pod average is held at target."
        ),
    )
    target: PositiveQuantity = Field(
        default="5",
        description=(
            "Per-pod average to hold, above 0 (kv_cache_usage_perc is a fraction: 0.8 or 800m)."
        ),
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        MIN_LE_MAX.require(self.min_replicas <= self.max_replicas)
        return self


class NetworkPolicySpec(CamelModel):
    """Who may reach port 8000; the operator's namespace is always allowed."""

    enabled: bool = Field(default=True, description="Create the NetworkPolicy.")
    allow_from: list[NetworkPolicyPeer] = Field(
        default_factory=lambda: [NetworkPolicyPeer(pod_selector=LabelSelector())],
        max_length=32,
        description="Allowed clients; the default allows every pod of the same namespace.",
        json_schema_extra={"default": [{"podSelector": {}}]},
    )


class Auth(CamelModel):
    """Clients must send `Authorization: Bearer <key>`."""

    api_key_secret_ref: SecretKeyRef = Field(description="Secret key holding the API key.")


class CachePVC(CamelModel):
    """The model cache volume: an existing claim, or a per-pod claim of a given size."""

    model_config = CamelModel.model_config | {
        "json_schema_extra": cel_rules(CLAIM_XOR_SIZE, CLASS_NEEDS_SIZE)
    }

    claim_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="An existing PersistentVolumeClaim (ReadWriteMany when replicas > 1).",
    )
    size: PositiveQuantity | None = Field(
        default=None,
        description="Size (above 0) of a per-pod ephemeral claim, deleted with the pod.",
    )
    storage_class_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="Storage class of the per-pod claim (default: the cluster's).",
    )

    @model_validator(mode="after")
    def _one_kind_of_claim(self) -> CachePVC:
        CLAIM_XOR_SIZE.require((self.claim_name is None) != (self.size is None))
        CLASS_NEEDS_SIZE.require(self.storage_class_name is None or self.size is not None)
        return self


class Cache(CamelModel):
    """Where downloaded weights live (default: an emptyDir, fetched again by every new pod)."""

    pvc: CachePVC | None = Field(default=None, description="Keep the cache on a volume claim.")


class Scheduling(CamelModel):
    """Where pods may run."""

    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=64, description="Node labels the pod requires."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Extra tolerations (one for the GPU resource's taint is always added).",
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="A core/v1 Affinity, passed to the pod as-is.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: str | None = Field(
        default=None, pattern=DNS_SUBDOMAIN, max_length=253, description="The pods' PriorityClass."
    )


class Rollout(CamelModel):
    """The Deployment's rolling update; the default needs no spare GPU (one pod down at a time)."""

    model_config = CamelModel.model_config | {"json_schema_extra": cel_rules(ROLLOUT_CAN_PROGRESS)}

    max_surge: IntOrPercent = Field(
        default=0, description="Extra pods during a rollout (each needs free GPUs)."
    )
    max_unavailable: IntOrPercent = Field(
        default=1, description="Pods that may be down during a rollout."
    )

    @model_validator(mode="after")
    def _can_progress(self) -> Rollout:
        ROLLOUT_CAN_PROGRESS.require(
            not (is_zero(self.max_surge) and is_zero(self.max_unavailable))
        )
        return self


class DisruptionBudget(CamelModel):
    """The PodDisruptionBudget protecting replicas from node drains."""

    max_unavailable: IntOrPercent = Field(
        default=1, description="Pods a voluntary disruption (drain) may take down at once."
    )


class LLMServiceSpec(CamelModel):
    """The desired state of an LLMService."""

    model_config = CamelModel.model_config | {
        "json_schema_extra": cel_rules(REPLICAS_VS_AUTOSCALING, GPUS_COVER_TP)
    }

    model: ModelSpec = Field(description="The model to serve.")
    image: str | None = Field(
        default=None,
        pattern=r"^\S+$",
        max_length=512,
        description="The runtime image (default: the operator's LLMSERVICE_DEFAULT_IMAGE).",
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Pods (default 1); must be unset when autoscaling is enabled.",
    )
    resources: Resources = _object(Resources, "Per-pod GPUs, CPU and memory.")
    engine: Engine = _object(Engine, "Runtime flags.")
    autoscaling: Autoscaling = _object(Autoscaling, "Horizontal autoscaling on runtime metrics.")
    network_policy: NetworkPolicySpec = _object(NetworkPolicySpec, "Ingress restriction.")
    auth: Auth | None = Field(default=None, description="Require an API key.")
    cache: Cache = _object(Cache, "Model cache volume.")
    shm_size: Quantity = Field(
        default="8Gi",
        description="Size of the memory-backed /dev/shm (NCCL and tensor parallelism).",
    )
    scheduling: Scheduling = _object(Scheduling, "Node selection.")
    rollout: Rollout = _object(Rollout, "Rolling update of the pods.")
    disruption_budget: DisruptionBudget = _object(DisruptionBudget, "PodDisruptionBudget.")
    shutdown_timeout_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description=(
            "How long a stopping pod drains in-flight requests (--shutdown-timeout); the pod's "
            "terminationGracePeriodSeconds is this + 15."
        ),
    )
    startup_timeout_seconds: int = Field(
        default=1800,
        ge=60,
        le=86_400,
        description=(
            "How long a pod may take to download and load the model before it is restarted "
            "(the startupProbe budget); also bounds the Deployment's progress deadline."
        ),
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> LLMServiceSpec:
        REPLICAS_VS_AUTOSCALING.require(not self.autoscaling.enabled or self.replicas is None)
        GPUS_COVER_TP.require(
            self.engine.tensor_parallel_size == 1
            or self.resources.gpus >= self.engine.tensor_parallel_size
        )
        return self


class Condition(CamelModel):
    """A status condition in the shape of metav1.Condition."""

    type: Literal["Ready", "Progressing", "Degraded"] = Field(description="The condition.")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether it holds.")
    reason: str = Field(max_length=1024, description="CamelCase reason, e.g. Unschedulable.")
    message: str = Field(max_length=32_768, description="What happened and what to do.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="Generation it is about.")


class LLMServiceStatus(CamelModel):
    """What the operator observed (written by the operator only)."""

    phase: Literal["Pending", "Progressing", "Ready", "Degraded", "ScaledToZero"] | None = Field(
        default=None, description="Summary of the conditions."
    )
    observed_generation: int | None = Field(default=None, description="Last reconciled generation.")
    replicas: int | None = Field(default=None, description="Pods that exist.")
    ready_replicas: int | None = Field(default=None, description="Pods that serve.")
    url: str | None = Field(default=None, description="The in-cluster OpenAI base URL.")
    selector: str | None = Field(default=None, description="Label selector of the pods.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing and Degraded.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
