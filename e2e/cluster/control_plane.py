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
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import components
from .components import HERE, START_ORDER, Ports
from .kubeconfig import write_kubeconfig
from .kubectl import Kubectl
from .pki import ADMIN, CONTROLLER_MANAGER, KWOK, SCHEDULER, ClientIdentity, Pki, make_pki
from .waiting import wait_for


class ComponentFailedError(RuntimeError):
    """A component exited or never became healthy; the message carries its log's tail."""


def _is_ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


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

    def up(self, timeout: float = 180, attempts: int = 3) -> None:
        """Starts every component and waits until the cluster schedules onto Ready fake nodes."""
        if (self.directory / "state.json").exists():
            raise RuntimeError(f"a control plane already runs in {self.directory}: `down` it first")
        for attempt in range(1, attempts + 1):
            try:
                self._up_once(timeout)
                return
            except ComponentFailedError as error:
                # A port chosen free was taken by another process before the component bound it.
                if "address already in use" not in str(error) or attempt == attempts:
                    raise

    def _up_once(self, timeout: float) -> None:
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
        self._client_kubeconfig(ADMIN, self.kubeconfig)
        kubeconfig = {
            i.name: self._client_kubeconfig(i) for i in (CONTROLLER_MANAGER, SCHEDULER, KWOK)
        }
        health = ports.health_urls(self.server)
        self._start("etcd", components.etcd_args(self.directory / "etcd", ports))
        self._await("etcd", health["etcd"], timeout)
        self._start("kube-apiserver", components.apiserver_args(self.pki, ports))
        self._await("kube-apiserver", health["kube-apiserver"], timeout)
        self._start(
            "kube-controller-manager",
            components.controller_manager_args(
                self.pki, ports, kubeconfig[CONTROLLER_MANAGER.name]
            ),
        )
        self._start("kube-scheduler", components.scheduler_args(ports, kubeconfig[SCHEDULER.name]))
        self._start("kwok", components.kwok_args(ports, kubeconfig[KWOK.name]))
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            self._await(name, health[name], timeout)
        kubectl = self.kubectl
        kubectl.run("apply", "-f", str(HERE / "nodes.yaml"))
        self._wait(
            lambda: all(_is_ready(node) for node in kubectl.items("nodes")),
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
            self.pki.cert("ca"),
            client_cert=self.pki.cert(identity.name),
            client_key=self.pki.key(identity.name),
        )

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
            context.load_verify_locations(self.pki.cert("ca"))
            context.load_cert_chain(self.pki.cert(ADMIN.name), self.pki.key(ADMIN.name))
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
