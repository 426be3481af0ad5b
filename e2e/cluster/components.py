"""The command lines of the control plane's components (pure: paths and ports in, flags out).

Flags as a kubeadm cluster sets them where it matters to the operator: RBAC and Node
authorization, ServiceAccount token signing, the default admission plugins plus NodeRestriction
and ExtendedResourceToleration, every controller with its own ServiceAccount credentials.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from .pki import FRONT_PROXY_CLIENT, Pki

HERE = Path(__file__).resolve().parent
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# Fake pod and node addresses: written into status by kwok, never connected to (the harness
# sends no traffic to them). Not loopback, since EndpointSlices reject loopback addresses.
POD_CIDR = "10.244.0.1/16"
NODE_IP = "10.250.0.1"
# The API server's admission plugins on top of its defaults.
EXTRA_ADMISSION_PLUGINS = "NodeRestriction,ExtendedResourceToleration"
START_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


@dataclass(frozen=True)
class Ports:
    """Loopback ports of one control plane, all free when allocated."""

    etcd_client: int
    """etcd's client URL (plain HTTP)."""
    etcd_peer: int
    """etcd's peer URL (a single member, still has to bind)."""
    apiserver: int
    """The API server's HTTPS port."""
    controller_manager: int
    """kube-controller-manager's HTTPS health port."""
    scheduler: int
    """kube-scheduler's HTTPS health port."""
    kwok: int
    """kwok's HTTP health port."""

    @classmethod
    def allocate(cls) -> Ports:
        # Hold every socket until all are chosen so the ports are distinct.
        sockets = [socket.socket() for _ in range(6)]
        try:
            for s in sockets:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in sockets))
        finally:
            for s in sockets:
                s.close()

    def health_urls(self, server: str) -> dict[str, str]:
        """Each component's health endpoint (answers 200 once it serves)."""
        return {
            "etcd": f"http://127.0.0.1:{self.etcd_client}/health",
            "kube-apiserver": f"{server}/readyz",
            "kube-controller-manager": f"https://127.0.0.1:{self.controller_manager}/healthz",
            "kube-scheduler": f"https://127.0.0.1:{self.scheduler}/healthz",
            "kwok": f"http://127.0.0.1:{self.kwok}/healthz",
        }


def etcd_args(data_dir: Path, ports: Ports) -> list[str]:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        "--name=e2e",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=e2e={peer}",
        # A throw-away cluster on a shared disk: durability buys nothing, fsyncs cost seconds.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(pki: Pki, ports: Ports) -> list[str]:
    return [
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        # The `kubernetes` Service's endpoints would be this loopback address, which
        # EndpointSlices reject; nothing in this cluster runs in a pod that needs it.
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={pki.cert('apiserver')}",
        f"--tls-private-key-file={pki.key('apiserver')}",
        f"--client-ca-file={pki.cert('ca')}",
        # Request-header authentication (aggregation layer): the controller-manager and the
        # scheduler read this CA from the cluster to authenticate their health callers.
        f"--requestheader-client-ca-file={pki.cert('front-proxy-ca')}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.cert(FRONT_PROXY_CLIENT)}",
        f"--proxy-client-key-file={pki.key(FRONT_PROXY_CLIENT)}",
        "--authorization-mode=Node,RBAC",
        f"--enable-admission-plugins={EXTRA_ADMISSION_PLUGINS}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.sa_public_key}",
        f"--service-account-signing-key-file={pki.sa_private_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--profiling=false",
    ]


def _client_component_args(kubeconfig: Path, port: int) -> list[str]:
    """What the controller-manager and the scheduler share: identity, health port, no election."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        # One instance: leader election would only delay start-up after a restart.
        "--leader-elect=false",
        "--profiling=false",
    ]


def controller_manager_args(pki: Pki, ports: Ports, kubeconfig: Path) -> list[str]:
    return [
        *_client_component_args(kubeconfig, ports.controller_manager),
        "--controllers=*",
        "--cluster-name=llmservice-e2e",
        # Each controller gets its own ServiceAccount token, as in a real cluster.
        "--use-service-account-credentials=true",
        f"--root-ca-file={pki.cert('ca')}",
        f"--service-account-private-key-file={pki.sa_private_key}",
        f"--cluster-signing-cert-file={pki.cert('ca')}",
        f"--cluster-signing-key-file={pki.key('ca')}",
    ]


def scheduler_args(ports: Ports, kubeconfig: Path) -> list[str]:
    return _client_component_args(kubeconfig, ports.scheduler)


def kwok_args(ports: Ports, kubeconfig: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--config={HERE / 'stages.yaml'}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        f"--server-address=127.0.0.1:{ports.kwok}",
        f"--cidr={POD_CIDR}",
        f"--node-ip={NODE_IP}",
        "--node-lease-duration-seconds=40",
    ]
