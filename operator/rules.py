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
RESERVED_FLAG_NAMES = (
    "host",
    "port",
    "api-key",
    "shutdown-timeout",
    "device",
    "served-model-name",
    "max-model-len",
    "gpu-memory-utilization",
    "max-num-seqs",
    "max-num-batched-tokens",
    "enable-prefix-caching",
    "no-enable-prefix-caching",
    "scheduling-policy",
    "reasoning-parser",
    "tensor-parallel-size",
    "dtype",
)


def _prefixes(name: str) -> str:
    """A regex for every non-empty prefix of name: port -> p(o(r(t)?)?)?."""
    # NOTE: names are lowercase letters and '-', which need no escaping (the regex goes into a
    # CEL string literal, where a backslash would need escaping too).
    return name[0] + "".join(f"({c}" for c in name[1:]) + ")?" * (len(name) - 1)


# argparse takes any unique prefix of a flag (--por=9000 is --port=9000), so every prefix is
# reserved; the few that are not unique (--d) fail at start-up anyway. The value may hold any
# character: a plain `.` stops at a newline, and int() of "\n9000" is 9000.
RESERVED_FLAG = f"^--({'|'.join(_prefixes(name) for name in RESERVED_FLAG_NAMES)})(=(?s:.*))?$"

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
        "--api-key, --shutdown-timeout, --device, or one of spec.engine's own fields), nor an "
        "abbreviation of one (--por): set the spec field instead"
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
# Kubernetes' own checks of tolerations, label selectors and network policy peers, moved to the
# LLMService so a mistake is refused on apply instead of failing the Deployment's apply later.
TOLERATION_KEY_OR_EXISTS = CelRule(
    rule="has(self.key) || (has(self.operator) && self.operator == 'Exists')",
    message=(
        "spec.scheduling.tolerations: a toleration without a key must have operator Exists "
        "(it tolerates every taint)"
    ),
    field_path=".operator",
)
TOLERATION_SECONDS_NO_EXECUTE = CelRule(
    rule="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
    message="spec.scheduling.tolerations: tolerationSeconds applies only with effect NoExecute",
    field_path=".effect",
)
TOLERATION_EXISTS_NO_VALUE = CelRule(
    rule="!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
    message="spec.scheduling.tolerations: a toleration with operator Exists must have no value",
    field_path=".value",
    reason="FieldValueForbidden",
)
SELECTOR_VALUES = CelRule(
    rule=(
        "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) "
        ": (!has(self.values) || size(self.values) == 0)"
    ),
    message=(
        "spec.networkPolicy.allowFrom: matchExpressions with operator In or NotIn need values; "
        "with Exists or DoesNotExist they take none"
    ),
    field_path=".values",
)
PEER_ONE_KIND = CelRule(
    rule=(
        "has(self.ipBlock) ? !has(self.podSelector) && !has(self.namespaceSelector) "
        ": has(self.podSelector) || has(self.namespaceSelector)"
    ),
    message=(
        "spec.networkPolicy.allowFrom: each entry needs podSelector and/or namespaceSelector, "
        "or an ipBlock alone"
    ),
)
