"""DIMSETLS settings: contexts, file errors named, profiles' and the CLI's TLS.

No network: contexts are built from an ``openssl``-made PKI (tests/tls_pki.py);
handshake failures are in tests/emulator/test_dimse_tls.py and tests/dcmtk.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import click
import pytest

from dicomtrolley.cli.dimse import tls_settings
from dicomtrolley.config_files import load_profile
from dicomtrolley.config_model import DimseConfig
from dicomtrolley.credentials import ConfigError
from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet, DICOMQRMove
from dicomtrolley.dimse.settings import KEY_PASSWORD_ENV, Peer
from dicomtrolley.dimse.tls import DIMSETLS, DIMSETLSError, refusal
from tests.tls_pki import KEY_PASSWORD, Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_verify_is_on_by_default_with_system_cas() -> None:
    context = DIMSETLS().client_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    tls = DIMSETLS()
    assert tls.client_context() is tls.client_context()  # made once


def test_no_verify_and_server_context(pki: Pki) -> None:
    context = DIMSETLS(verify=False).client_context()
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    server = DIMSETLS(
        ca_file=pki.ca, cert_file=pki.server.cert, key_file=pki.server.key
    )
    assert server.server_context().verify_mode == ssl.CERT_REQUIRED  # client certs
    with pytest.raises(ConfigError, match="needs a certificate"):
        DIMSETLS(ca_file=pki.ca).server_context()


def test_password_never_shown(pki: Pki) -> None:
    tls = DIMSETLS(cert_file=pki.server.cert, key_password="hunter2")
    assert "hunter2" not in repr(tls) and "hunter2" not in str(tls)
    assert "hunter2" not in str(Peer("pacs", 104, tls=tls))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ca_file": "missing-ca.pem"}, r"CA file .*missing-ca.pem: No such file"),
        ({"ca_file": "{key}"}, r"CA file .*server.key: no PEM certificate"),
        ({"cert_file": "missing.pem"}, r"certificate file .*missing.pem: No such"),
        ({"cert_file": "{key}"}, r"certificate file .*server.key: no PEM cert"),
        ({"cert_file": "{cert}"}, r"key file .*server.pem: no PEM private key"),
        (
            {"cert_file": "{cert}", "key_file": "{client_key}"},
            r"key file .*client.key does not belong to certificate .*server.pem",
        ),
        (
            {"cert_file": "{cert}", "key_file": "{encrypted}"},
            rf"server-encrypted.key is encrypted: wrong or missing password.*"
            rf"{KEY_PASSWORD_ENV}",
        ),
        ({"ciphers": "NOT-A-CIPHER"}, "no cipher matches"),
    ],
)
def test_unusable_files_are_config_errors_naming_them(
    pki: Pki, settings: dict[str, str], message: str
) -> None:
    names = {
        "key": str(pki.server.key),
        "cert": str(pki.server.cert),
        "client_key": str(pki.client.key),
        "encrypted": str(pki.encrypted_key),
    }
    filled = {k: v.format(**names) for k, v in settings.items()}
    with pytest.raises(ConfigError, match=message) as caught:
        DIMSETLS(**filled).client_context()  # type: ignore[arg-type]
    assert not isinstance(caught.value.__cause__, OSError)


def test_encrypted_key_with_its_password(pki: Pki) -> None:
    tls = DIMSETLS(
        cert_file=pki.server.cert, key_file=pki.encrypted_key, key_password=KEY_PASSWORD
    )
    assert tls.server_context()


def test_key_without_certificate() -> None:
    with pytest.raises(ConfigError, match="key file needs its certificate"):
        DIMSETLS(key_file=Path("key.pem"))


def test_adapters_carry_tls_to_their_peer(pki: Pki) -> None:
    tls = DIMSETLS(ca_file=pki.ca)
    assert DICOMQR("pacs", 104, tls=tls).peer.tls is tls
    assert DICOMQRGet("pacs", 104, tls=tls).peer.tls is tls
    mover = DICOMQRMove("pacs", 104, tls=tls)
    assert mover.peer.tls is tls and mover.store_tls is tls
    assert DICOMQRMove("pacs", 104, tls=tls, store_tls=False).store_tls is None
    assert "TLS" in str(DICOMQR("pacs", 104, tls=tls).peer)
    assert DICOMQR("pacs", 104).peer.tls is None


def test_profile_dimse_tls_table(pki: Pki, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[profiles.secure]
download = "c-get"
dimse = {{ host = "pacs", port = 2762, aec = "PACS", tls = {{ ca = "{pki.ca}", \
cert = "{pki.server.cert}", key = "{pki.encrypted_key}", \
key_password_env = "PACS_KEY" }} }}

[profiles.system]
dimse = {{ host = "pacs", port = 2762, tls = true }}
"""
    )
    profile = load_profile("secure", config)
    assert profile.dimse is not None and profile.dimse.tls is not None
    tls = profile.dimse.tls.settings({"PACS_KEY": KEY_PASSWORD})
    assert tls.ca_file == pki.ca and tls.verify and tls.key_password == KEY_PASSWORD
    assert tls.client_context()
    assert "PACS_KEY" in str(profile.describe()) and KEY_PASSWORD not in str(
        profile.describe()
    )
    system = load_profile("system", config)
    assert system.dimse is not None and system.dimse.tls is not None
    assert system.dimse.tls_settings() == DIMSETLS()


def test_profile_tls_checked() -> None:
    with pytest.raises(ConfigError, match="key needs cert"):
        DimseConfig(host="pacs", port=104, tls={"key": "k.pem"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="choose one"):
        DimseConfig(host="pacs", port=104, tls={"ca": "c.pem", "verify": False})  # type: ignore[arg-type]
    assert DimseConfig(host="pacs", port=104).tls_settings() is None


def test_cli_tls_options(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    assert tls_settings(False, None, None, None, False) is None
    assert tls_settings(True, None, None, None, False) == DIMSETLS()
    implied = tls_settings(False, pki.ca, pki.client.cert, pki.client.key, False)
    assert implied is not None and implied.ca_file == pki.ca and implied.verify
    unverified = tls_settings(False, None, None, None, True)
    assert unverified is not None and not unverified.verify
    assert "--tls-no-verify" in capsys.readouterr().err
    with pytest.raises(click.UsageError, match="--tls-key needs --tls-cert"):
        tls_settings(True, None, None, pki.client.key, False)
    with pytest.raises(ConfigError, match="does not belong"):
        tls_settings(True, None, pki.server.cert, pki.client.key, False)


def test_tls_alerts_refusing_us_are_permanent(pki: Pki) -> None:
    """The alert may meet a later read or write of the link too (unit of the
    mapping): an SSLError naming a refusal becomes DIMSETLSError; others not."""
    peer = Peer("pacs", 104, "TROLLEY", "PACS", tls=DIMSETLS(ca_file=pki.ca))
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    alert.reason = "TLSV1_ALERT_UNKNOWN_CA"
    refused = refusal(alert, peer, "C-GET")
    assert isinstance(refused, DIMSETLSError) and "does not trust" in str(refused)
    assert refusal(ssl.SSLEOFError(8, "EOF"), peer, "C-GET") is None
    assert refusal(ConnectionResetError(104, "reset"), peer, "C-GET") is None
    other = ssl.SSLError(1, "bad record mac")
    other.reason = "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"
    assert refusal(other, peer, "C-GET") is None
