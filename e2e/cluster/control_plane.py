"""A real Kubernetes control plane on loopback: etcd, API server, controller-manager, scheduler, kwok.

`ControlPlane(directory, bin_dir).up()` starts every component as its own process group
(logs under `directory/logs/`), waits until each is healthy, registers the fake nodes of
nodes.yaml and waits for them to be Ready. `directory/kubeconfig` is an admin kubeconfig.
`stop(directory)` (or `.down()`) kills every process group it recorded and removes the
directory: nothing is left behind. The record (`state.json`) lets `down` run from another
process than `up` (by hand: `python e2e/cluster up`, later `python e2e/cluster down`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .kubeconfig import write_kubeconfig
from .kubectl import Kubectl
from .pki import (
    ADMIN,
    CONTROLLER_MANAGER,
    FRONT_PROXY_CLIENT,
    KWOK,
    SCHEDULER,
    ClientIdentity,
    Pki,
    make_pki,
)
from .waiting import wait_for

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


class ComponentFailedError(RuntimeError):
    """A component exited or never became healthy; the message carries its log's tail."""


def _log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ControlPlane:
    """One local control plane rooted at `directory`."""

    def __init__(self, directory: Path, bin_dir: Path) -> None:
        self.directory = directory
        self.bin_dir = bin_dir
        self.pki = Pki(directory / "pki")
        self.logs = directory / "logs"
        self.server = ""
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def kubeconfig(self) -> Path:
        """The admin (system:masters) kubeconfig."""
        return self.directory / "kubeconfig"

    @property
    def kubectl(self) -> Kubectl:
        return Kubectl(self.bin_dir, self.kubeconfig)

    def up(self, timeout: float = 180) -> None:
        """Starts every component and waits until the cluster schedules onto Ready fake nodes."""
        if (self.directory / "state.json").exists():
            raise RuntimeError(f"a control plane already runs in {self.directory}: `down` it first")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        ports = Ports.allocate()
        self.server = f"https://127.0.0.1:{ports.apiserver}"
        self._record(ports)
        try:
            self._start_all(ports, timeout)
        except BaseException:
            self.down()
            raise

    def _start_all(self, ports: Ports, timeout: float) -> None:
        make_pki(self.pki.directory)
        kubeconfigs = {
            identity.name: self._client_kubeconfig(identity)
            for identity in (CONTROLLER_MANAGER, SCHEDULER, KWOK)
        }
        self._client_kubeconfig(ADMIN, self.kubeconfig)
        self._start("etcd", self._etcd_args(ports))
        self._await("etcd", f"http://127.0.0.1:{ports.etcd_client}/health", timeout)
        self._start("kube-apiserver", self._apiserver_args(ports))
        self._await("kube-apiserver", f"{self.server}/readyz", timeout)
        self._start("kube-controller-manager", self._controller_manager_args(ports, kubeconfigs))
        self._start("kube-scheduler", self._scheduler_args(ports, kubeconfigs))
        self._start("kwok", self._kwok_args(ports, kubeconfigs))
        self._await(
            "kube-controller-manager",
            f"https://127.0.0.1:{ports.controller_manager}/healthz",
            timeout,
        )
        self._await("kube-scheduler", f"https://127.0.0.1:{ports.scheduler}/healthz", timeout)
        self._await("kwok", f"http://127.0.0.1:{ports.kwok}/healthz", timeout)
        kubectl = self.kubectl
        kubectl.run("apply", "-f", str(HERE / "nodes.yaml"))
        self._wait(
            lambda: all(
                any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in node["status"].get("conditions", [])
                )
                for node in kubectl.items("nodes")
            ),
            timeout,
            "the fake nodes to be Ready (kwok)",
        )
        # Pods need their namespace's default ServiceAccount (made by the controller-manager).
        self._wait(
            lambda: kubectl.get_or_none("serviceaccount", "default", "default"),
            timeout,
            "the default ServiceAccount (kube-controller-manager)",
        )

    def _client_kubeconfig(self, identity: ClientIdentity, path: Path | None = None) -> Path:
        return write_kubeconfig(
            path or self.directory / f"{identity.name}.kubeconfig",
            self.server,
            self.pki.ca_cert,
            client_cert=self.pki.client_cert(identity),
            client_key=self.pki.client_key(identity),
        )

    def _etcd_args(self, ports: Ports) -> list[str]:
        client = f"http://127.0.0.1:{ports.etcd_client}"
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        return [
            "--name=e2e",
            f"--data-dir={self.directory / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=e2e={peer}",
            # A throw-away cluster on a shared disk: durability buys nothing, fsyncs cost seconds.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_args(self, ports: Ports) -> list[str]:
        pki = self.pki
        return [
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            # The `kubernetes` Service's endpoints would be this loopback address, which
            # EndpointSlices reject; nothing in this cluster runs in a pod that needs it.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            # Request-header authentication (aggregation layer): the controller-manager and the
            # scheduler read this CA from the cluster to authenticate their health callers.
            f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
            f"--proxy-client-key-file={pki.front_proxy_client_key}",
            "--authorization-mode=Node,RBAC",
            f"--enable-admission-plugins={EXTRA_ADMISSION_PLUGINS}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--profiling=false",
        ]

    def _controller_manager_args(self, ports: Ports, kubeconfigs: dict[str, Path]) -> list[str]:
        kubeconfig = kubeconfigs[CONTROLLER_MANAGER.name]
        pki = self.pki
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            "--leader-elect=false",
            "--controllers=*",
            "--cluster-name=llmservice-e2e",
            # Each controller gets its own ServiceAccount token, as in a real cluster.
            "--use-service-account-credentials=true",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.sa_private_key}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--profiling=false",
        ]

    def _scheduler_args(self, ports: Ports, kubeconfigs: dict[str, Path]) -> list[str]:
        kubeconfig = kubeconfigs[SCHEDULER.name]
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _kwok_args(self, ports: Ports, kubeconfigs: dict[str, Path]) -> list[str]:
        return [
            f"--kubeconfig={kubeconfigs[KWOK.name]}",
            f"--config={HERE / 'stages.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{ports.kwok}",
            f"--cidr={POD_CIDR}",
            f"--node-ip={NODE_IP}",
            "--node-lease-duration-seconds=40",
        ]

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        # kwok reads ~/.kwok/kwok.yaml when it exists: give it a home of its own.
        env = dict(os.environ, HOME=str(self.directory))
        process = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        self._processes[name] = process
        self._record()

    def _await(self, name: str, url: str, timeout: float) -> None:
        """Waits for `url` to answer 200 (the API server's with the admin certificate)."""
        context = ssl.create_default_context()
        if name == "kube-apiserver":
            context.load_verify_locations(self.pki.ca_cert)
            context.load_cert_chain(self.pki.client_cert(ADMIN), self.pki.client_key(ADMIN))
        else:  # the controller-manager and scheduler serve with self-signed certificates
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE

        def healthy() -> bool:
            self._check_alive(name)
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                return bool(response.status == 200)

        self._wait(healthy, timeout, f"{name} to be healthy ({url})", component=name)

    def _wait(
        self, probe: Callable[[], object], timeout: float, what: str, component: str | None = None
    ) -> None:
        def explain() -> str:
            names = [component] if component else list(self._processes)
            return "\n".join(f"--- {n} log:\n{_log_tail(self.logs / f'{n}.log')}" for n in names)

        def probe_checked() -> object:
            for name in self._processes:
                self._check_alive(name)
            return probe()

        try:
            wait_for(probe_checked, timeout=timeout, what=what, interval=0.5, explain=explain)
        except ComponentFailedError:
            raise
        except TimeoutError as error:
            raise ComponentFailedError(str(error)) from None

    def _check_alive(self, name: str) -> None:
        code = self._processes[name].poll()
        if code is not None:
            raise ComponentFailedError(
                f"{name} exited with {code}; its log:\n{_log_tail(self.logs / f'{name}.log')}"
            )

    def _record(self, ports: Ports | None = None) -> None:
        state_path = self.directory / "state.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        if ports is not None:
            state["ports"] = asdict(ports)
            state["server"] = self.server
        state["processes"] = {
            name: {"pid": p.pid, "binary": str(self.bin_dir / name)}
            for name, p in self._processes.items()
        }
        state_path.write_text(json.dumps(state, indent=2))

    def down(self) -> None:
        """Stops every component and removes the directory."""
        stop(self.directory)
        for process in self._processes.values():
            process.wait()  # reap (they are dead by now)
        self._processes.clear()


def _is_ours(pid: int, binary: str) -> bool:
    """True if `pid` still runs `binary` (a recycled pid must never be signalled)."""
    try:
        return os.readlink(f"/proc/{pid}/exe") == binary
    except OSError:
        return False


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # exited meanwhile
        os.killpg(pid, signum)


def stop(directory: Path, grace: float = 10) -> None:
    """Kills the process groups recorded in `directory/state.json`, then removes `directory`."""
    state_path = directory / "state.json"
    if state_path.exists():
        processes = json.loads(state_path.read_text()).get("processes", {})
        alive = {}
        for name in reversed(START_ORDER):
            entry = processes.get(name)
            if entry and _is_ours(entry["pid"], entry["binary"]):
                _signal_group(entry["pid"], signal.SIGTERM)
                alive[name] = entry
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = {n: e for n, e in alive.items() if _is_ours(e["pid"], e["binary"])}
            time.sleep(0.1)
        for entry in alive.values():
            _signal_group(entry["pid"], signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)
