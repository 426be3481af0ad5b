"""A local Kubernetes control plane for the e2e tests (and for trying the operator by hand).

Real kube-apiserver, kube-controller-manager, kube-scheduler and etcd of one pinned release,
with kwok playing the kubelets of fake GPU and CPU nodes; everything on loopback, no Docker.
"""

from __future__ import annotations

from .build import ensure_binaries
from .control_plane import ControlPlane, stop
from .kubectl import CommandError, Kubectl
from .waiting import WaitTimeoutError, wait_for

__all__ = [
    "CommandError",
    "ControlPlane",
    "Kubectl",
    "WaitTimeoutError",
    "ensure_binaries",
    "stop",
    "wait_for",
]
