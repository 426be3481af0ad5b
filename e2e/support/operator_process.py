"""Runs `llmservice operator` on this machine exactly as the Helm chart's Deployment would run it.

The chart's pod cannot start here (no container runtime, no image), so its Deployment is read
back from the cluster and its operator container is reproduced as a local process: the same
arguments, the same environment (fieldRefs resolved like the kubelet would), and the
ServiceAccount's own token (TokenRequest, like the projected token the pod would mount). Every
API call the operator makes is therefore authorised by the chart's RBAC rules alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from cluster import ControlPlane, Kubectl, wait_for
from cluster.kubeconfig import write_kubeconfig

# The venv's console script, next to the interpreter running the tests.
LLMSERVICE = Path(sys.executable).with_name("llmservice")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _resolve_env(container: dict[str, Any], pod_namespace: str) -> dict[str, str]:
    """The container's env as the kubelet would set it (literals and metadata fieldRefs)."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        field = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field == "metadata.namespace":
            env[item["name"]] = pod_namespace
        elif field is not None:
            raise ValueError(f"the operator container's env {item['name']} needs {field}")
        else:
            raise ValueError(
                f"the operator container's env {item['name']} has an unsupported source"
            )
    return env


def _with_loopback_liveness(args: list[str], url: str) -> list[str]:
    """The chart's arguments with the liveness endpoint moved to a free loopback port."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--liveness":
            skip = True
            continue
        if not arg.startswith("--liveness="):
            kept.append(arg)
    return [*kept, f"--liveness={url}"]


class OperatorProcess:
    """The operator of one Helm release, run locally with its ServiceAccount's credentials."""

    def __init__(self, plane: ControlPlane, deployment: dict[str, Any], log: Path) -> None:
        pod = deployment["spec"]["template"]["spec"]
        self.namespace: str = deployment["metadata"]["namespace"]
        self.service_account: str = pod["serviceAccountName"]
        self.container: dict[str, Any] = next(
            c
            for c in pod["containers"]
            if "operator" in [*c.get("command", []), *c.get("args", [])]
        )
        self._plane = plane
        self._log = log
        self._kubeconfig = plane.directory / "operator.kubeconfig"
        self._process: subprocess.Popen[bytes] | None = None
        self.liveness_url = ""

    @property
    def kubectl(self) -> Kubectl:
        """kubectl with the operator's own credentials (for `auth can-i` checks)."""
        return Kubectl(self._plane.bin_dir, self._kubeconfig)

    @property
    def argv(self) -> list[str]:
        """The local command: the container's `llmservice ...` words, liveness on loopback."""
        words = [*self.container.get("command", []), *self.container.get("args", [])]
        start = words.index("operator")
        return [str(LLMSERVICE), *_with_loopback_liveness(words[start:], self.liveness_url)]

    def start(self, timeout: float = 90) -> None:
        admin = self._plane.kubectl
        token = admin.run(
            "create", "token", self.service_account, "-n", self.namespace, "--duration=6h"
        ).stdout.strip()
        write_kubeconfig(
            self._kubeconfig,
            self._plane.server,
            self._plane.pki.cert("ca"),
            token=token,
            namespace=self.namespace,
        )
        self.liveness_url = f"http://127.0.0.1:{_free_port()}/healthz"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("KUBERNETES_", "LLMSERVICE_")) and key != "POD_NAMESPACE"
        }
        env |= _resolve_env(self.container, self.namespace)
        env["KUBECONFIG"] = str(self._kubeconfig)
        with self._log.open("ab") as log:
            log.write(f"\n=== start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        wait_for(
            self._live,
            timeout=timeout,
            what=f"the operator's liveness ({self.liveness_url})",
            interval=0.5,
            explain=self.log_tail,
        )

    def _live(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError("the operator process exited")
        with urllib.request.urlopen(self.liveness_url, timeout=5) as response:
            return bool(response.status == 200)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Stops the operator (SIGKILL: a crash mid-reconcile; SIGTERM: a graceful stop)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            os.killpg(self._process.pid, signum)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None

    def signal(self, signum: int) -> None:
        """Sends a signal to the running operator (SIGSTOP freezes it mid-reconcile)."""
        if self._process is None:
            raise RuntimeError("the operator is not running")
        os.killpg(self._process.pid, signum)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        text = self._log.read_text(errors="replace") if self._log.exists() else ""
        return "--- operator log (tail):\n" + "\n".join(text.splitlines()[-lines:])
