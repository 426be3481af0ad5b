"""What a cluster admin provides before an LLMService can run: Secrets, volumes, PriorityClasses.

The examples reference objects the operator does not create (a Hugging Face token Secret, an
API-key Secret, an existing model-cache claim, a storage class for per-pod claims, a
PriorityClass). These manifests stand them up the way an admin would; volumes are static
PersistentVolumes (no provisioner runs here) that the PV controller and the scheduler bind.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def _secret(namespace: str, ref: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ref["name"], "namespace": namespace},
        "stringData": {ref["key"]: "e2e-not-a-real-secret"},
    }


def _volume(name: str, size: str, storage_class: str, access: str, claim: Obj | None) -> Obj:
    spec: Obj = {
        "capacity": {"storage": size},
        "accessModes": [access],
        "storageClassName": storage_class,
        "persistentVolumeReclaimPolicy": "Delete",
        # Never mounted: kwok plays the kubelet.
        "hostPath": {"path": f"/e2e/volumes/{name}"},
    }
    if claim is not None:
        spec["claimRef"] = claim
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": spec,
    }


def prerequisites(llmservice: Obj, namespace: str, replicas: int) -> list[Obj]:
    """Objects that must exist before `llmservice` (moved to `namespace`) can become Ready."""
    spec = llmservice["spec"]
    objs: list[Obj] = []
    for ref in (
        spec["model"].get("credentialsSecretRef"),
        (spec.get("auth") or {}).get("apiKeySecretRef"),
    ):
        if ref is not None:
            objs.append(_secret(namespace, ref))
    pvc = (spec.get("cache") or {}).get("pvc") or {}
    if "claimName" in pvc:
        claim = pvc["claimName"]
        objs.append(
            _volume(
                f"{namespace}-{claim}",
                "200Gi",
                "",
                "ReadWriteMany",
                {"namespace": namespace, "name": claim},
            )
        )
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": f"{namespace}-{claim}",
                    "resources": {"requests": {"storage": "200Gi"}},
                },
            }
        )
    if "size" in pvc:
        # Without a class (and no default class here) a claim binds to class-less volumes.
        storage_class = pvc.get("storageClassName", "")
        if storage_class:
            objs.append(
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {"name": storage_class},
                    "provisioner": "kubernetes.io/no-provisioner",
                    "volumeBindingMode": "WaitForFirstConsumer",
                }
            )
        # One volume per pod the rollout may create at once.
        for index in range(replicas + 1):
            objs.append(
                _volume(
                    f"{namespace}-cache-{index}",
                    str(pvc["size"]),
                    storage_class,
                    "ReadWriteOnce",
                    None,
                )
            )
    priority_class = (spec.get("scheduling") or {}).get("priorityClassName")
    if priority_class is not None:
        objs.append(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": priority_class},
                "value": 1000,
                "description": "e2e: the example's PriorityClass",
            }
        )
    return objs
