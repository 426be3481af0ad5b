"""kubectl and helm bound to one kubeconfig: the way the harness and the tests talk to the cluster."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class CommandError(RuntimeError):
    """kubectl or helm exited non-zero; the message carries the command and its stderr."""

    def __init__(self, command: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"`{' '.join(command)}` exited {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class Kubectl:
    """Runs the pinned kubectl and helm against one kubeconfig."""

    bin_dir: Path
    """Folder of the cached binaries."""
    kubeconfig: Path
    """The kubeconfig every command uses (never the user's ~/.kube/config)."""

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self._run("kubectl", list(args), stdin, check, timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        return self._run("helm", list(args), None, check, timeout).stdout

    def _run(
        self, tool: str, args: list[str], stdin: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / tool), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise CommandError([tool, *args], result.returncode, result.stderr)
        return result

    def get(self, kind: str, name: str | None = None, namespace: str | None = None) -> Any:
        """`kubectl get -o json` parsed; a list kind returns the List object."""
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        return json.loads(self.run(*args).stdout)

    def get_or_none(self, kind: str, name: str, namespace: str | None = None) -> Any | None:
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
        if namespace:
            args += ["-n", namespace]
        out = self.run(*args).stdout
        return json.loads(out) if out.strip() else None

    def items(
        self, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> list[Any]:
        args = ["get", kind, "-o", "json"]
        args += ["-n", namespace] if namespace else ["-A"]
        if selector:
            args += ["-l", selector]
        return list(json.loads(self.run(*args).stdout)["items"])

    def apply(self, manifest: str, namespace: str | None = None) -> str:
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.run(*args, stdin=manifest).stdout

    def dump(self, *what: str, namespace: str | None = None) -> str:
        """`kubectl get <what> -o yaml` for failure messages; never raises."""
        args = ["get", ",".join(what), "-o", "yaml"] + (["-n", namespace] if namespace else [])
        result = self.run(*args, check=False)
        return f"$ kubectl get {','.join(what)} -o yaml\n{result.stdout}{result.stderr}"
