"""Fuzz: every LLMService the CRD accepts renders objects Kubernetes accepts, or fails clearly.

The generator walks the CRD's own OpenAPI schema (types, enums, bounds, patterns, optional
fields present or absent), then repairs each object so the object-level CEL rules hold (the
API server would refuse the others with a clear message, which test_schema.py covers). For what
is left the render path (`apply_defaults` + `parse_llmservice` + `build_all`, the same code as
`llmservice render` and the reconciler) must produce objects that pass Kubernetes' own
validation rules for the fields it fills, checked here in Python: label keys and values, object
names, quantities, int32 counts, tolerations, label selectors, network policy peers and CIDRs,
and that no extra argument silently replaces a flag the operator sets.
"""

from __future__ import annotations

import contextlib
import copy
import io
import ipaddress
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmservice.operator.builders import build_all
from llmservice.operator.crd import apply_defaults, openapi_schema
from llmservice.operator.resource import InvalidLLMService, parse_llmservice
from llmservice.operator.settings import Settings
from llmservice.runtime.cli import build_parser

Obj = dict[str, Any]
SCHEMA = openapi_schema()
SPEC = SCHEMA["properties"]["spec"]
INT32_MAX = 2**31 - 1
INT64 = 2**63

# Kubernetes' own formats (k8s.io/apimachinery/pkg/util/validation, api/resource).
LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
K8S_QUANTITY = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?"

# Shapes of spec.scheduling.affinity (passed through as-is: the API server checks the Deployment).
AFFINITIES: list[Obj] = [
    {},
    {"nodeAffinity": {}},
    {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "x"}},
                    },
                }
            ]
        }
    },
]


def _string(node: Obj) -> st.SearchStrategy[str]:
    limit = node.get("maxLength", 300)
    if "enum" in node:
        return st.sampled_from(node["enum"])
    patterns = [node.get("pattern")] + [
        m.group(1)
        for rule in node.get("x-kubernetes-validations", [])
        if (m := re.fullmatch(r"self\.matches\('(.*)'\)", rule["rule"]))
    ]
    pattern = next((p for p in patterns if p), None)
    if pattern is not None:
        return st.from_regex(pattern, fullmatch=True).filter(lambda s: len(s) <= limit)
    # Free text: ASCII-ish flags and values as well as unicode, newlines and the empty string.
    flags = st.sampled_from(
        ["--", "-", "--seed=1", "--por=9000", "--port\n", "--host =x", "", "--max-log-len=5"]
    )
    return st.one_of(flags, st.text(max_size=min(limit, 40))).filter(lambda s: len(s) <= limit)


def _int_or_string(node: Obj) -> st.SearchStrategy[Any]:
    low, high = int(node.get("minimum", 0)), int(node.get("maximum", INT64 - 1))
    ints = st.one_of(st.integers(low, min(high, 1000)), st.integers(low, high))
    return st.one_of(
        ints, st.from_regex(node["pattern"], fullmatch=True).filter(lambda s: len(s) <= 64)
    )


def _object(node: Obj) -> st.SearchStrategy[Any]:
    properties = node.get("properties")
    if properties is not None:
        required = set(node.get("required", []))
        return st.fixed_dictionaries(
            {k: strategy(v) for k, v in properties.items() if k in required},
            optional={k: strategy(v) for k, v in properties.items() if k not in required},
        )
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        rules = " ".join(rule["rule"] for rule in node.get("x-kubernetes-validations", []))
        found = re.search(r"k\.matches\('(.*?)'\)", rules)
        keys = (
            st.from_regex(found.group(1).replace("\\\\", "\\"), fullmatch=True)
            if found
            else st.text(max_size=20)
        )
        return st.dictionaries(keys.filter(lambda k: len(k) <= 317), strategy(extra), max_size=3)
    return st.sampled_from(AFFINITIES)


def strategy(node: Obj) -> st.SearchStrategy[Any]:
    """Values that the structural schema `node` accepts (CEL rules on objects aside)."""
    if node.get("x-kubernetes-int-or-string"):
        return _int_or_string(node)
    kind = node.get("type")
    if kind == "object":
        return _object(node)
    if kind == "array":
        return st.lists(strategy(node["items"]), max_size=min(node.get("maxItems", 4), 4))
    if kind == "string":
        return _string(node)
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = node.get("minimum", -INT64), node.get("maximum", INT64 - 1)
        return st.integers(low, high)
    if kind == "number":
        low = node.get("minimum")
        return st.floats(low, node.get("maximum"), exclude_min=bool(node.get("exclusiveMinimum")))
    raise ValueError(f"no strategy for schema node {node}")


def _zero(value: Any) -> bool:
    return str(value) in ("0", "0%")


def satisfy_object_rules(spec: Obj) -> Obj:
    """Change the fewest fields so every object-level CEL rule of the CRD holds."""
    spec = copy.deepcopy(spec)
    scaling = spec.get("autoscaling", {})
    if scaling.get("enabled"):
        spec.pop("replicas", None)
    low, high = scaling.get("minReplicas", 1), scaling.get("maxReplicas", 4)
    if low > high:
        scaling["minReplicas"], scaling["maxReplicas"] = high, low
    tp = spec.get("engine", {}).get("tensorParallelSize", 1)
    resources = spec.setdefault("resources", {})
    if tp > 1 and resources.get("gpus", 1) < tp:
        resources["gpus"] = tp
    pvc = spec.get("cache", {}).get("pvc")
    if pvc is not None:
        if "claimName" in pvc and "size" in pvc:
            del pvc["claimName"]
        if "claimName" not in pvc and "size" not in pvc:
            pvc["size"] = "10Gi"
        if "claimName" in pvc:
            pvc.pop("storageClassName", None)
    rollout = spec.get("rollout", {})
    if _zero(rollout.get("maxSurge", 0)) and _zero(rollout.get("maxUnavailable", 1)):
        rollout["maxUnavailable"] = 1
    for tol in spec.get("scheduling", {}).get("tolerations", []):
        if "key" not in tol:
            tol["operator"] = "Exists"
        if tol.get("operator") == "Exists":
            tol.pop("value", None)
        if "tolerationSeconds" in tol:
            tol["effect"] = "NoExecute"
    for peer in spec.get("networkPolicy", {}).get("allowFrom", []):
        if "ipBlock" in peer:
            # NOTE: CIDR syntax is left to the API server (refused on apply, reported in status).
            peer["ipBlock"] = {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}
            peer.pop("podSelector", None)
            peer.pop("namespaceSelector", None)
        elif not peer:
            peer["podSelector"] = {}
        for selector in (peer.get("podSelector"), peer.get("namespaceSelector")):
            for req in (selector or {}).get("matchExpressions", []):
                if req["operator"] in ("In", "NotIn") and not req.get("values"):
                    req["values"] = ["a"]
                if req["operator"] in ("Exists", "DoesNotExist"):
                    req.pop("values", None)
    engine = spec.get("engine", {})
    if "extraArgs" in engine:
        engine["extraArgs"] = [a for a in engine["extraArgs"] if not _reserved(a)]
    return spec


def _reserved(arg: str) -> bool:
    """The CRD's extraArgs rule, `self.all(a, !a.matches(RE))`, read from the CRD itself."""
    (rule,) = SPEC["properties"]["engine"]["properties"]["extraArgs"]["x-kubernetes-validations"]
    found = re.fullmatch(r"self\.all\(a, !a\.matches\('(.*)'\)\)", rule["rule"])
    if found is None:
        raise ValueError(f"unexpected extraArgs rule {rule['rule']}")
    # CEL's matches() is RE2 searching anywhere; the pattern's own ^ and $ anchor it.
    return re.search(found.group(1).replace("\\\\", "\\"), arg) is not None


def _label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not re.fullmatch(DNS1123_SUBDOMAIN, prefix)):
        return False
    return len(name) <= 63 and re.fullmatch(LABEL_NAME, name) is not None


def _label_value(value: str) -> bool:
    return len(value) <= 63 and re.fullmatch(f"({LABEL_NAME})?", value) is not None


def _check_labels(where: str, labels: Obj, problems: list[str]) -> None:
    for key, value in labels.items():
        if not _label_key(key) or not isinstance(value, str) or not _label_value(value):
            problems.append(f"{where}: invalid label {key!r}={value!r}")


def _check_quantity(where: str, value: Any, positive: bool, problems: list[str]) -> None:
    text = str(value)
    if isinstance(value, bool) or not re.fullmatch(K8S_QUANTITY, text):
        problems.append(f"{where}: {value!r} is not a quantity")
    elif positive and not re.search(r"[1-9]", re.split(r"[eEnumkKMGTP]", text)[0]):
        problems.append(f"{where}: {value!r} must be positive")


def _check_int_or_percent(where: str, value: Any, problems: list[str]) -> None:
    if isinstance(value, int) and not 0 <= value <= INT32_MAX:
        problems.append(f"{where}: {value} does not fit an int32")


def _check_tolerations(tolerations: list[Obj], problems: list[str]) -> None:
    # core/validation ValidateTolerations.
    for i, tol in enumerate(tolerations):
        where = f"tolerations[{i}]"
        key, operator, value = (
            tol.get("key", ""),
            tol.get("operator", "Equal"),
            tol.get("value", ""),
        )
        if key and not _label_key(key):
            problems.append(f"{where}: key {key!r} is not a qualified name")
        if not key and operator != "Exists":
            problems.append(f"{where}: operator must be Exists when key is empty")
        if "tolerationSeconds" in tol and tol.get("effect") != "NoExecute":
            problems.append(f"{where}: tolerationSeconds needs effect NoExecute")
        if operator == "Exists" and value:
            problems.append(f"{where}: value must be empty with operator Exists")
        if operator == "Equal" and not _label_value(value):
            problems.append(f"{where}: value {value!r} is not a label value")
        if not -INT64 <= tol.get("tolerationSeconds", 0) < INT64:
            problems.append(f"{where}: tolerationSeconds does not fit an int64")


def _check_selector(where: str, selector: Obj, problems: list[str]) -> None:
    _check_labels(f"{where}.matchLabels", selector.get("matchLabels") or {}, problems)
    for i, req in enumerate(selector.get("matchExpressions") or []):
        values = req.get("values") or []
        if not _label_key(req["key"]):
            problems.append(f"{where}.matchExpressions[{i}]: key {req['key']!r} is invalid")
        if req["operator"] in ("In", "NotIn") and not values:
            problems.append(f"{where}.matchExpressions[{i}]: In/NotIn need values")
        if req["operator"] in ("Exists", "DoesNotExist") and values:
            problems.append(f"{where}.matchExpressions[{i}]: Exists takes no values")
        for value in values:
            if not _label_value(value):
                problems.append(f"{where}.matchExpressions[{i}]: value {value!r} is invalid")


def _check_peer(where: str, peer: Obj, problems: list[str]) -> None:
    # networking/validation ValidateNetworkPolicyPeer: selectors, or an ipBlock alone.
    selectors = [k for k in ("podSelector", "namespaceSelector") if k in peer]
    if not selectors and "ipBlock" not in peer:
        problems.append(f"{where}: a peer must set a selector or an ipBlock")
    if selectors and "ipBlock" in peer:
        problems.append(f"{where}: an ipBlock may not be combined with selectors")
    for name in selectors:
        _check_selector(f"{where}.{name}", peer[name], problems)
    block = peer.get("ipBlock")
    if block is None:
        return
    try:
        cidr = ipaddress.ip_network(block["cidr"], strict=False)
        excluded = [ipaddress.ip_network(e, strict=False) for e in block.get("except") or []]
    except ValueError:
        problems.append(f"{where}.ipBlock: {block} holds an invalid CIDR")
        return
    for net in excluded:
        if net.version != cidr.version or not net.subnet_of(cidr) or net == cidr:  # type: ignore[arg-type]
            problems.append(f"{where}.ipBlock: except {net} is not strictly inside {cidr}")


def _serve_args(argv: list[str]) -> dict[str, Any] | None:
    """What `llmservice serve` (the runtime's real parser) makes of argv; None if it refuses."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return vars(build_parser().parse_args(["serve", *argv]))
    except SystemExit:
        return None  # an unknown or ambiguous flag: the pod fails at start, saying which


def _check_args(args: list[str], extra: list[str], problems: list[str]) -> None:
    if not all(isinstance(arg, str) for arg in args):
        problems.append(f"container args must be strings: {args}")
        return
    own_args = args[: len(args) - len(extra)]
    own = _serve_args(own_args)
    if own is None:
        problems.append(f"the runtime refuses the operator's own flags: {args}")
        return
    set_by_operator = {a.partition("=")[0].removeprefix("--").replace("-", "_") for a in own_args}
    for arg in extra:
        # Every flag the operator sets keeps its value, and the API key never comes from argv.
        full = _serve_args([*own_args, arg])
        changed = [
            dest
            for dest in own
            if full is not None
            and own[dest] != full[dest]
            and (dest in set_by_operator or dest == "api_key")
        ]
        if changed:
            problems.append(f"extraArgs {arg!r} overrides the operator's {changed}")


def check_manifests(spec: Obj, manifests: list[Obj]) -> list[str]:
    """Kubernetes' validation rules for the fields the builders fill in; [] when all hold."""
    problems: list[str] = []
    for manifest in manifests:
        meta = manifest["metadata"]
        if len(meta["name"]) > 63 or not re.fullmatch(DNS1035_LABEL, meta["name"]):
            problems.append(f"{manifest['kind']}: name {meta['name']!r}")
        _check_labels(manifest["kind"], meta.get("labels", {}), problems)
    by_kind = {m["kind"]: m["spec"] for m in manifests}
    deployment = by_kind["Deployment"]
    for key, value in deployment["strategy"]["rollingUpdate"].items():
        _check_int_or_percent(f"rollingUpdate.{key}", value, problems)
    _check_int_or_percent(
        "pdb.maxUnavailable", by_kind["PodDisruptionBudget"]["maxUnavailable"], problems
    )
    pod = deployment["template"]["spec"]
    _check_labels("nodeSelector", pod.get("nodeSelector", {}), problems)
    _check_tolerations(pod.get("tolerations", []), problems)
    for container in [*pod["containers"], *pod.get("initContainers", [])]:
        for part in ("requests", "limits"):
            for resource, value in container["resources"][part].items():
                if "/" in resource and not _label_key(resource):
                    problems.append(f"resource name {resource!r} is not a qualified name")
                _check_quantity(f"{container['name']}.{part}.{resource}", value, False, problems)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            for field, number in container.get(probe, {}).items():
                if isinstance(number, int) and not 1 <= number <= INT32_MAX:
                    problems.append(f"{probe}.{field} = {number}")
    server = pod["containers"][0]
    _check_args(server["args"], spec.get("engine", {}).get("extraArgs", []), problems)
    for volume in pod["volumes"]:
        if "emptyDir" in volume and "sizeLimit" in volume["emptyDir"]:
            _check_quantity("shm", volume["emptyDir"]["sizeLimit"], False, problems)
        claim = volume.get("ephemeral", {}).get("volumeClaimTemplate", {}).get("spec")
        if claim is not None:
            _check_quantity("cache size", claim["resources"]["requests"]["storage"], True, problems)
    policy = by_kind.get("NetworkPolicy")
    for i, peer in enumerate(policy["ingress"][0]["from"] if policy else []):
        _check_peer(f"networkPolicy.from[{i}]", peer, problems)
    hpa = by_kind.get("HorizontalPodAutoscaler")
    if hpa is not None:
        target = hpa["metrics"][0]["pods"]["target"]["averageValue"]
        _check_quantity("hpa averageValue", target, True, problems)
    return problems


@pytest.mark.slow
@settings(
    deadline=None,
    max_examples=400,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(spec=strategy(SPEC))
def test_every_accepted_llmservice_renders_valid_objects(spec: Obj) -> None:
    body = {
        "apiVersion": "llmservice.io/v1alpha1",
        "kind": "LLMService",
        "metadata": {"name": "m", "namespace": "team", "uid": "u-1", "generation": 1},
        "spec": satisfy_object_rules(spec),
    }
    body = apply_defaults(body, SCHEMA)
    try:
        svc = parse_llmservice(body)
    except InvalidLLMService as error:
        raise AssertionError(f"the CRD accepts what the operator refuses: {error}") from None
    problems = check_manifests(body["spec"], build_all(svc, Settings()))
    assert problems == [], body["spec"]
