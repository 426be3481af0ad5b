"""Certificates and keys of the local control plane, made with the `openssl` CLI.

One CA signs the API server's serving certificate and a client certificate per identity
(admin in system:masters, the controller-manager, the scheduler, kwok). A second CA signs the
front-proxy client certificate of the aggregation layer (request-header authentication), as
kubeadm sets it up. The service-account key pair signs the tokens the API server issues
(TokenRequest, `kubectl create token`).
EC P-256 keys: generated in milliseconds, accepted by every component.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .build import ToolMissingError

# Names the API server's certificate answers to: loopback, and the in-cluster names a
# ServiceAccount kubeconfig would use.
SERVING_NAMES = (
    "DNS:localhost",
    "IP:127.0.0.1",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate's subject: the user name and groups the API server sees."""

    name: str
    """File stem of the certificate and key."""
    common_name: str
    """Subject CN: the Kubernetes user name."""
    organization: str | None = None
    """Subject O: a Kubernetes group (system:masters is cluster-admin and bypasses RBAC)."""


ADMIN = ClientIdentity("admin", "llmservice-e2e-admin", "system:masters")
CONTROLLER_MANAGER = ClientIdentity("controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("scheduler", "system:kube-scheduler")
# kwok plays every kubelet: it writes node and pod status, which system:masters may do.
KWOK = ClientIdentity("kwok", "llmservice-e2e-kwok", "system:masters")
CLIENTS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK)
# The aggregation layer's proxy identity (the API server's --requestheader-allowed-names).
FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass(frozen=True)
class Pki:
    """Paths of the generated files."""

    directory: Path
    """Where every file lives."""

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def front_proxy_ca_cert(self) -> Path:
        return self.directory / "front-proxy-ca.crt"

    @property
    def front_proxy_client_cert(self) -> Path:
        return self.directory / "front-proxy-client.crt"

    @property
    def front_proxy_client_key(self) -> Path:
        return self.directory / "front-proxy-client.key"

    @property
    def sa_private_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_public_key(self) -> Path:
        return self.directory / "sa.pub"

    def client_cert(self, identity: ClientIdentity) -> Path:
        return self.directory / f"{identity.name}.crt"

    def client_key(self, identity: ClientIdentity) -> Path:
        return self.directory / f"{identity.name}.key"


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _subject(common_name: str, organization: str | None) -> str:
    return (f"/O={organization}" if organization else "") + f"/CN={common_name}"


def _signed_cert(pki: Pki, stem: str, subject: str, extensions: list[str], ca: str = "ca") -> None:
    """A fresh EC key and a certificate for it signed by CA `ca` (OpenSSL >= 3.0 `req -CA`)."""
    _openssl(
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-days",
        "30",
        "-subj",
        subject,
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        str(pki.directory / f"{stem}.key"),
        "-out",
        str(pki.directory / f"{stem}.crt"),
        "-CA",
        str(pki.directory / f"{ca}.crt"),
        "-CAkey",
        str(pki.directory / f"{ca}.key"),
        *[arg for ext in extensions for arg in ("-addext", ext)],
    )


def _ca(pki: Pki, stem: str, common_name: str) -> None:
    _openssl(
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-days",
        "30",
        "-subj",
        f"/CN={common_name}",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        str(pki.directory / f"{stem}.key"),
        "-out",
        str(pki.directory / f"{stem}.crt"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )


def make_pki(directory: Path) -> Pki:
    """Generates the CA, serving and client certificates and the service-account key pair."""
    if shutil.which("openssl") is None:
        raise ToolMissingError("the `openssl` CLI is needed to make the e2e cluster's certificates")
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    _ca(pki, "ca", "llmservice-e2e-ca")
    _ca(pki, "front-proxy-ca", "llmservice-e2e-front-proxy-ca")
    leaf = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"]
    _signed_cert(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        [*leaf, "extendedKeyUsage=serverAuth", "subjectAltName=" + ",".join(SERVING_NAMES)],
    )
    _signed_cert(
        pki,
        "front-proxy-client",
        f"/CN={FRONT_PROXY_CLIENT}",
        [*leaf, "extendedKeyUsage=clientAuth"],
        ca="front-proxy-ca",
    )
    for identity in CLIENTS:
        _signed_cert(
            pki,
            identity.name,
            _subject(identity.common_name, identity.organization),
            [*leaf, "extendedKeyUsage=clientAuth"],
        )
    _openssl(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-out",
        str(pki.sa_private_key),
    )
    _openssl("pkey", "-in", str(pki.sa_private_key), "-pubout", "-out", str(pki.sa_public_key))
    return pki
