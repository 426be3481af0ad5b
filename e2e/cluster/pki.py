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

    def cert(self, stem: str) -> Path:
        """The certificate `stem` ("ca", "apiserver", "front-proxy-ca", a client identity's name)."""
        return self.directory / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        """The private key of certificate `stem`."""
        return self.directory / f"{stem}.key"

    @property
    def sa_private_key(self) -> Path:
        """Signs ServiceAccount tokens (API server) and verifies them (controller-manager)."""
        return self.directory / "sa.key"

    @property
    def sa_public_key(self) -> Path:
        return self.directory / "sa.pub"


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _subject(identity: ClientIdentity) -> str:
    return (
        f"/O={identity.organization}" if identity.organization else ""
    ) + f"/CN={identity.common_name}"


# A fresh EC P-256 key and an X.509 certificate for it, valid for 30 days.
_NEW_CERTIFICATE = "req -x509 -new -nodes -days 30 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"


def _certificate(pki: Pki, stem: str, subject: str, extensions: list[str], ca: str | None) -> None:
    """Key and certificate `stem`, signed by CA `ca` (OpenSSL >= 3.0 `req -CA`) or self-signed."""
    signer = ["-CA", str(pki.cert(ca)), "-CAkey", str(pki.key(ca))] if ca else []
    _openssl(
        *_NEW_CERTIFICATE.split(),
        *("-subj", subject, "-keyout", str(pki.key(stem)), "-out", str(pki.cert(stem))),
        *signer,
        *[arg for ext in extensions for arg in ("-addext", ext)],
    )


def make_pki(directory: Path) -> Pki:
    """Generates the CA, serving and client certificates and the service-account key pair."""
    if shutil.which("openssl") is None:
        raise ToolMissingError("the `openssl` CLI is needed to make the e2e cluster's certificates")
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    authority = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"]
    _certificate(pki, "ca", "/CN=llmservice-e2e-ca", authority, ca=None)
    _certificate(pki, "front-proxy-ca", "/CN=llmservice-e2e-front-proxy-ca", authority, ca=None)
    leaf = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"]
    client = [*leaf, "extendedKeyUsage=clientAuth"]
    serving = [*leaf, "extendedKeyUsage=serverAuth", "subjectAltName=" + ",".join(SERVING_NAMES)]
    _certificate(pki, "apiserver", "/CN=kube-apiserver", serving, ca="ca")
    _certificate(pki, FRONT_PROXY_CLIENT, f"/CN={FRONT_PROXY_CLIENT}", client, ca="front-proxy-ca")
    for identity in CLIENTS:
        _certificate(pki, identity.name, _subject(identity), client, ca="ca")
    _openssl(
        *["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out"],
        str(pki.sa_private_key),
    )
    _openssl("pkey", "-in", str(pki.sa_private_key), "-pubout", "-out", str(pki.sa_public_key))
    return pki
