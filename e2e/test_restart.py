"""An operator killed mid-reconcile and started again converges to the same state.

A reference LLMService is reconciled undisturbed. Then four more are created at once and the
operator is frozen (SIGSTOP) the moment the first of their Deployments appears, so the state it
leaves is provably partial, and killed (SIGKILL: no cleanup runs). After a restart every one of
them must end exactly like the reference: the same owned objects with the same specs, no
duplicates, no extra Deployment revision, status Ready.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from typing import Any

import pytest
import yaml
from cluster import Kubectl
from support.llmservices import LLMServices, small_llmservice
from support.operator_process import OperatorProcess

Obj = dict[str, Any]
COPIES = 4
# Fields that differ between any two objects made from the same manifest.
VOLATILE_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")


def _normalized(children: dict[str, list[Obj]], name: str, namespace: str) -> dict[str, Any]:
    """Children by kind without per-object identity, with the name and namespace masked."""
    result: dict[str, Any] = {}
    for kind, objs in children.items():
        assert len(objs) == 1, f"{name}: {len(objs)} {kind} objects"
        obj = json.loads(json.dumps(objs[0]))
        for key in VOLATILE_METADATA:
            obj["metadata"].pop(key, None)
        for ref in obj["metadata"].get("ownerReferences", []):
            ref.pop("uid", None)
        obj.pop("status", None)
        obj["spec"].pop("clusterIP", None)
        obj["spec"].pop("clusterIPs", None)
        text = json.dumps(obj, sort_keys=True).replace(namespace, "<namespace>")
        result[kind] = json.loads(
            text.replace(f'"{name}"', '"<name>"').replace(f"={name}", "=<name>")
        )
    return result


class _Watch:
    """`kubectl get deployments --watch -o name`, its lines read by a thread into a queue."""

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.process = subprocess.Popen(
            [
                str(kubectl.bin_dir / "kubectl"),
                "--kubeconfig",
                str(kubectl.kubeconfig),
                "get",
                "deployments",
                "-n",
                namespace,
                "--watch",
                "-o",
                "name",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def next_line(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"`kubectl get --watch` printed nothing within {timeout} s"
            ) from None

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.mark.slow
def test_operator_killed_mid_reconcile_converges_to_the_same_state(
    namespace: str, kubectl: Kubectl, llmservices: LLMServices, operator: OperatorProcess
) -> None:
    reference = llmservices.apply(small_llmservice("reference", namespace))
    reference = llmservices.wait_ready(namespace, "reference")
    expected = _normalized(llmservices.children(reference), "reference", namespace)

    names = [f"copy-{i}" for i in range(COPIES)]
    # `kubectl get --watch` lists, then watches from the list's version: once it has printed the
    # sentinel (an unrelated Deployment), no later event can be missed.
    kubectl.run(
        "create",
        "deployment",
        "sentinel",
        "--image=example.invalid/x",
        "--replicas=0",
        "-n",
        namespace,
    )
    watch = _Watch(kubectl, namespace)
    try:
        listed = {watch.next_line(timeout=30) for _ in range(2)}
        assert listed == {"deployment.apps/sentinel", "deployment.apps/reference"}, listed
        kubectl.apply(yaml.safe_dump_all([small_llmservice(n, namespace) for n in names]))
        while not watch.next_line(timeout=60).startswith("deployment.apps/copy-"):
            pass
        operator.signal(signal.SIGSTOP)
    finally:
        watch.close()

    try:
        # Frozen mid-reconcile: some copy lacks owned objects or a status.
        unfinished = [
            n
            for n in names
            if len(llmservices.children(llmservices.get(namespace, n))) < len(expected)
            or "observedGeneration" not in (llmservices.get(namespace, n).get("status") or {})
        ]
    finally:
        operator.stop(signal.SIGKILL)
        operator.start()
    assert unfinished, "the operator had finished every copy before it was frozen"

    for name in names:
        ready = llmservices.wait_ready(namespace, name)
        assert _normalized(llmservices.children(ready), name, namespace) == expected, name
        assert ready["status"]["observedGeneration"] == 1
    # The reference was not disturbed by the restart either.
    assert (
        _normalized(
            llmservices.children(llmservices.get(namespace, "reference")), "reference", namespace
        )
        == expected
    )
