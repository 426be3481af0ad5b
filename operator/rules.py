"""Every validation rule of the LLMService CRD that is more than a type, bound or enum.

Each `CelRule` goes into the CRD as an `x-kubernetes-validations` entry (the API server rejects
the resource with the rule's message, reported on the rule's field) and is checked again by the
schema models in Python with the same message, so `llmservice render` rejects what the API server
would. Transition rules (`oldSelf`) have no Python twin: they need the stored object.
"""

from __future__ import annotations

from llmservice.operator.schema_types import CelRule

# The served name clients put in "model": HF-style names such as Qwen/Qwen3-8B are allowed.
MODEL_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.:/]*[A-Za-z0-9])?$"
MODEL_SOURCE = (
    r"^(hf://[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9][-A-Za-z0-9_.]*"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^/]+)*/?"
    r"|builtin:[a-z0-9][-a-z0-9]*)$"
)
REVISION = r"^[-A-Za-z0-9_./]+$"
# Flags the operator sets itself; extraArgs may not repeat them (the last one would win silently).
RESERVED_FLAGS = (
    "host|port|api-key|shutdown-timeout|device|served-model-name|max-model-len"
    "|gpu-memory-utilization|max-num-seqs|max-num-batched-tokens|enable-prefix-caching"
    "|no-enable-prefix-caching|scheduling-policy|reasoning-parser|tensor-parallel-size|dtype"
)
RESERVED_FLAG = rf"^--({RESERVED_FLAGS})(=.*)?$"

SOURCE_FORMAT = CelRule(
    rule=f"self.matches('{MODEL_SOURCE}')",
    message="spec.model.source must be hf://<org>/<repo>, pvc://<claim>/<path> or builtin:<name>",
)
SOURCE_IMMUTABLE = CelRule(
    rule="self == oldSelf",
    message=(
        "spec.model.source is immutable: a different model under the same LLMService would be "
        "served to clients under the old name and re-fetched over the old cache; create a new "
        "LLMService and move clients to it"
    ),
)
RESERVED_ARGS = CelRule(
    rule=f"self.all(a, !a.matches('{RESERVED_FLAG}'))",
    message=(
        "spec.engine.extraArgs must not contain flags the operator sets (--host, --port, "
        "--api-key, --shutdown-timeout, --device, or one of spec.engine's own fields): set the "
        "spec field instead"
    ),
)
MIN_LE_MAX = CelRule(
    rule="self.minReplicas <= self.maxReplicas",
    message="spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas",
    field_path=".minReplicas",
)
CLAIM_XOR_SIZE = CelRule(
    rule="has(self.claimName) != has(self.size)",
    message=(
        "spec.cache.pvc must set exactly one of claimName (an existing PersistentVolumeClaim, "
        "shared by all replicas) or size (a per-pod volume the operator requests)"
    ),
)
CLASS_NEEDS_SIZE = CelRule(
    rule="!has(self.storageClassName) || has(self.size)",
    message=(
        "spec.cache.pvc.storageClassName applies only with spec.cache.pvc.size: an existing "
        "claim already has its storage class"
    ),
    field_path=".storageClassName",
    reason="FieldValueForbidden",
)
ROLLOUT_CAN_PROGRESS = CelRule(
    rule=("!(string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])"),
    message=(
        "spec.rollout.maxSurge and spec.rollout.maxUnavailable must not both be 0: the rollout "
        "could never replace a pod"
    ),
    field_path=".maxUnavailable",
)
REPLICAS_VS_AUTOSCALING = CelRule(
    rule="!self.autoscaling.enabled || !has(self.replicas)",
    message=(
        "spec.replicas must not be set when spec.autoscaling.enabled is true: the "
        "HorizontalPodAutoscaler owns the replica count (use autoscaling.minReplicas and "
        "autoscaling.maxReplicas)"
    ),
    field_path=".replicas",
    reason="FieldValueForbidden",
)
GPUS_COVER_TP = CelRule(
    rule=(
        "self.engine.tensorParallelSize == 1 || "
        "self.resources.gpus >= self.engine.tensorParallelSize"
    ),
    message=(
        "spec.resources.gpus must be at least spec.engine.tensorParallelSize: every "
        "tensor-parallel rank needs its own GPU in the pod"
    ),
    field_path=".resources.gpus",
)
# Evaluated at the root of the object, where CEL may read metadata.name.
NAME_IS_DNS_LABEL = CelRule(
    rule="size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    message=(
        "metadata.name must be a DNS-1035 label (at most 63 lowercase letters, digits and '-', "
        "starting with a letter): it names the Service clients connect to"
    ),
    field_path=".metadata.name",
)
