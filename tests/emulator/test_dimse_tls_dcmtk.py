"""DICOM over TLS against DCMTK, the independent implementation.

DCMTK's tools with ``+tls KEY CERT +cf CA`` (OpenSSL underneath, BCP 195
profile) talk to our TLS storage SCP (``echoscu``, ``storescu``) and to the
emulator's TLS SCP (``findscu``; Debian's DCMTK 3.6.7 builds ``getscu`` and
``movescu`` without TLS); our storage SCP refuses
``storescu`` without a client certificate, and ``storescu`` refuses our SCP when
it does not trust its CA. Certificates from tests/tls_pki.py; 127.0.0.1 only.
Run with ``bash scripts/loopback-only.sh``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomtrolley.dimse.retrieve import RetrieveUnit, Tally
from dicomtrolley.dimse.tls import DIMSETLS
from dicomtrolley.emulator import DimseService, Emulator, default_services
from tests.emulator.conftest import DemoData
from tests.emulator.test_store_scp import HOST, STORE_AET, Saved, ct, scp
from tests.fakes import tree
from tests.tls_pki import Pki, make_pki


def dcmtk(
    tool: str, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    found = shutil.which(tool)
    if found is None:
        pytest.fail(f"DCMTK's {tool} is not installed", pytrace=False)
    return subprocess.run(
        [found, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TCP_NODELAY": "1"},
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_args(pki: Pki, ca: Path | None = None) -> list[str]:
    """DCMTK's TLS options: the client certificate, the CA, no key password."""
    return [
        "+tls", str(pki.client.key), str(pki.client.cert),
        "-pw", "+cf", str(ca or pki.ca),
    ]  # fmt: skip


def ours(pki: Pki) -> DIMSETLS:
    return DIMSETLS(ca_file=pki.ca, cert_file=pki.server.cert, key_file=pki.server.key)


def test_echoscu_and_storescu_over_tls_into_our_storage_scp(
    pki: Pki, tmp_path: Path
) -> None:
    saved = Saved(tmp_path / "out")
    files = []
    for n in range(3):
        path = tmp_path / f"ct{n}.dcm"
        ct(f"1.2.3.9.{n}").save_as(path, enforce_file_format=True)
        files.append(str(path))
    tally = Tally(RetrieveUnit("STUDY", "1.2.3"))
    saved.receiver.register(1, tally)
    with scp(saved, tls=ours(pki)) as server:
        port = str(server.port)
        echo = dcmtk("echoscu", *tls_args(pki), "-aet", "PACS", "-aec", STORE_AET,
                     HOST, port)  # fmt: skip
        assert echo.returncode == 0, echo.stdout + echo.stderr
        sent = dcmtk("storescu", *tls_args(pki), "-aet", "PACS", "-aec", STORE_AET,
                     HOST, port, *files)  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        # without a client certificate (anonymous TLS): refused by our SCP
        anonymous = dcmtk("storescu", "+tla", "+cf", str(pki.ca), "-aet", "PACS",
                          "-aec", STORE_AET, HOST, port, files[0])  # fmt: skip
        assert anonymous.returncode != 0
        # storescu not trusting our CA refuses us
        distrust = dcmtk("storescu", *tls_args(pki, pki.other_ca), "-aet", "PACS",
                         "-aec", STORE_AET, HOST, port, files[0])  # fmt: skip
        assert distrust.returncode != 0
        # plain TCP at our TLS port: refused, nothing stored
        plain = dcmtk("storescu", "-aet", "PACS", "-aec", STORE_AET, HOST, port,
                      files[0])  # fmt: skip
        assert plain.returncode != 0
    assert tally.received == {"1.2.3.9.0", "1.2.3.9.1", "1.2.3.9.2"}
    assert len([p for p in tree(saved.out) if p.is_file()]) == 3


@pytest.fixture(scope="module")
def secure(demo: DemoData, pki: Pki) -> Iterator[DimseService]:
    service = DimseService(tls=ours(pki))
    with Emulator(
        demo.root, services=[*default_services(), service], rescan_interval=None
    ):
        yield service


def test_findscu_over_tls_against_the_emulator(
    secure: DimseService, demo: DemoData, pki: Pki
) -> None:
    study = demo.study("DTR003").study_uid
    found = dcmtk("findscu", *tls_args(pki), "-S", "-aet", "DCMTK", "-aec",
                  secure.ae_title, "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={study}", HOST, str(secure.port))  # fmt: skip
    assert found.returncode == 0, found.stdout + found.stderr
    assert study in found.stdout + found.stderr


def test_plain_findscu_at_the_tls_port_fails(secure: DimseService) -> None:
    plain = dcmtk("findscu", "-S", "-aec", secure.ae_title, "-k",
                  "QueryRetrieveLevel=STUDY", HOST, str(secure.port), timeout=20)  # fmt: skip
    assert plain.returncode != 0
