"""A throwaway PKI for TLS tests, made with the ``openssl`` command line tool.

:func:`make_pki` writes into a folder: a test CA; a server and a client
certificate it signs for ``localhost`` and ``127.0.0.1``; a certificate for
another host name; an expired one; one signed by a second CA nobody trusts;
and an encrypted copy of the server key. RSA 2048 keys, which every DCMTK and
Orthanc TLS profile accepts. Takes about a second.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

KEY_PASSWORD = "s3cret-key"
LOCAL_NAMES = "subjectAltName=DNS:localhost,IP:127.0.0.1"


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Pair
    client: Pair
    wrong_host: Pair
    expired: Pair
    untrusted: Pair
    encrypted_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    found = shutil.which("openssl")
    if found is None:
        pytest.fail("the openssl command line tool is not installed", pytrace=False)
    subprocess.run([found, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> Pair:
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN=dicomtrolley {name}", "-keyout", str(pair.key),
        "-out", str(pair.cert), cwd=folder,
    )  # fmt: skip
    return pair


def _signed(folder: Path, name: str, ca: Pair, names: str, days: str = "2") -> Pair:
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    request, extensions = folder / f"{name}.csr", folder / f"{name}.ext"
    extensions.write_text(f"{names}\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", str(pair.key), "-out", str(request), cwd=folder,
    )  # fmt: skip
    # -days -1: valid until a day before it was issued, i.e. expired
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca.cert),
        "-CAkey", str(ca.key), "-CAcreateserial", "-days", days,
        "-extfile", str(extensions), "-out", str(pair.cert), cwd=folder,
    )  # fmt: skip
    return pair


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca, other = _ca(folder, "ca"), _ca(folder, "other-ca")
    server = _signed(folder, "server", ca, LOCAL_NAMES)
    encrypted = folder / "server-encrypted.key"
    _openssl(
        "pkey", "-in", str(server.key), "-aes256", "-passout",
        f"pass:{KEY_PASSWORD}", "-out", str(encrypted), cwd=folder,
    )  # fmt: skip
    return Pki(
        ca=ca.cert,
        server=server,
        client=_signed(folder, "client", ca, LOCAL_NAMES),
        wrong_host=_signed(folder, "wrong-host", ca, "subjectAltName=DNS:pacs.example"),
        expired=_signed(folder, "expired", ca, LOCAL_NAMES, days="-1"),
        untrusted=_signed(folder, "untrusted", other, LOCAL_NAMES),
        encrypted_key=encrypted,
        other_ca=other.cert,
    )
