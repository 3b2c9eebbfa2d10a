"""DICOM over TLS (PS3.15 annex B, the secure transport connection profiles).

:class:`DIMSETLS` says how to secure a DIMSE connection: which certificate
authorities to trust, our certificate and key, whether to verify the peer.
Verification is on by default, against the system's CAs when no CA is given.
The same value serves both ends: as requestor (C-FIND, C-GET, C-MOVE) our
certificate is the client certificate and the PACS's is verified, host name
included; as the C-MOVE storage SCP our certificate is the server's and, with
``verify``, the PACS must present one that the CAs vouch for (mutual
authentication, as the DICOM profiles expect).

The TCP connection comes first; :func:`wrap_client` and :func:`wrap_server`
then run the handshake in slices of :data:`SLICE` seconds, so that the
connect timeout and a caller's ``cancelled()`` are honoured in between. After
the handshake the :class:`~dicomtrolley.dimse.link.Link` reads and writes the
TLS socket as it would a plain one.

Errors: a certificate, key or CA file that cannot be used is a
:class:`~dicomtrolley.credentials.ConfigError` naming the file. A handshake
that fails for a reason a retry will not fix (a certificate refused by either
side, an unknown CA, a host name mismatch, an expired certificate, a peer that
does not speak TLS) is a :class:`DIMSETLSError` (permanent); a connection
lost or a timeout during the handshake stays transient
(:class:`~dicomtrolley.dimse.errors.DIMSEConnectionError`,
:class:`~dicomtrolley.dimse.errors.DIMSETimeoutError`). With TLS 1.3 a server
refuses a client certificate only after the client's handshake is over: the
alert meets the link's first read or write (:func:`refusal` makes it the same
permanent error), or is lost to a reset (:func:`closed_after_handshake`). As
server we close refused connections so that the client reads our alert, and
answer a client that sent no TLS with one (:data:`PROTOCOL_VERSION_ALERT`).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dicomtrolley.credentials import ConfigError
from dicomtrolley.dimse.errors import (
    AssociationAbortedError,
    DIMSEConnectionError,
    DIMSEError,
    DIMSETimeoutError,
)
from dicomtrolley.dimse.settings import KEY_PASSWORD_ENV, DIMSETimeouts, Peer
from dicomtrolley.exceptions import PermanentError
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("dimse")

#: Longest single wait during a handshake, between checks of cancellation.
SLICE = 0.2

Cancelled = Callable[[], bool]


class DIMSETLSError(DIMSEError, PermanentError):
    """The TLS handshake failed for good: a certificate refused (ours or the
    peer's), an unknown CA, a host name mismatch, an expired certificate, no
    protocol version or cipher in common, or a peer that does not speak TLS."""


def _never() -> bool:
    return False


@dataclass(frozen=True)
class DIMSETLS:
    """How to secure DIMSE connections with TLS.

    Parameters
    ----------
    ca_file, ca_path:
        The certificate authorities to trust (a PEM file of certificates, a
        folder prepared with ``openssl rehash``). Neither: the system's CAs.
    cert_file, key_file:
        Our certificate (PEM, with its chain) and its private key (default: in
        ``cert_file`` too). The client certificate as requestor; the storage
        SCP's certificate (required there).
    key_password:
        The password of an encrypted key (never shown in repr or logs).
    verify:
        Verify the peer's certificate (default). As requestor: the PACS's; as
        storage SCP: require one from the PACS and verify it. False encrypts
        without knowing who is at the other end: for tests only.
    check_hostname:
        As requestor, the PACS's certificate must be for the host connected to
        (its DNS name or IP address), when ``verify``.
    minimum_version:
        The oldest TLS version allowed (TLS 1.2, as BCP 195 asks).
    ciphers:
        An OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's);
        None: OpenSSL's defaults.
    """

    ca_file: Path | None = None
    ca_path: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: str | None = field(default=None, repr=False)
    verify: bool = True
    check_hostname: bool = True
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    ciphers: str | None = None
    _contexts: dict[bool, ssl.SSLContext] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        for name in ("ca_file", "ca_path", "cert_file", "key_file"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser())
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError("TLS: a key file needs its certificate file")
        if not isinstance(self.minimum_version, ssl.TLSVersion):
            raise ConfigError(
                f"TLS: minimum_version must be an ssl.TLSVersion, "
                f"not {self.minimum_version!r}"
            )

    def __str__(self) -> str:
        parts = ["TLS"]
        if not self.verify:
            parts.append("unverified")
        elif self.ca_file or self.ca_path:
            parts.append(f"CA {self.ca_file or self.ca_path}")
        if self.cert_file:
            parts.append(f"certificate {self.cert_file}")
        return ", ".join(parts)

    # -- contexts -----------------------------------------------------------------

    def client_context(self) -> ssl.SSLContext:
        """The context for connecting to a PACS (made once, then reused).

        Raises ConfigError naming the file that cannot be used.
        """
        return self._context(server=False)

    def server_context(self) -> ssl.SSLContext:
        """The context of the storage SCP (needs ``cert_file``; made once).

        Raises ConfigError naming the file that cannot be used.
        """
        if self.cert_file is None:
            raise ConfigError(
                "TLS: the storage SCP needs a certificate and key (cert_file, "
                "key_file) to accept TLS connections"
            )
        return self._context(server=True)

    def _context(self, server: bool) -> ssl.SSLContext:
        found = self._contexts.get(server)
        if found is None:
            found = self._contexts[server] = self._build(server)
        return found

    def _build(self, server: bool) -> ssl.SSLContext:
        context = ssl.SSLContext(
            ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT
        )
        context.minimum_version = self.minimum_version
        if self.verify:
            context.verify_mode = ssl.CERT_REQUIRED
            context.check_hostname = self.check_hostname and not server
            self._load_authorities(context, server)
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.ciphers:
            try:
                context.set_ciphers(self.ciphers)
            except ssl.SSLError:
                raise ConfigError(f"TLS: no cipher matches {self.ciphers!r}") from None
        if self.cert_file is not None:
            self._load_certificate(context)
        return context

    def _load_authorities(self, context: ssl.SSLContext, server: bool) -> None:
        if self.ca_file is None and self.ca_path is None:
            context.load_default_certs(
                ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
            )
            return
        for what, path in (("CA file", self.ca_file), ("CA folder", self.ca_path)):
            if path is not None:
                _check_readable(path, what, folder=what == "CA folder")
        try:
            context.load_verify_locations(
                cafile=None if self.ca_file is None else str(self.ca_file),
                capath=None if self.ca_path is None else str(self.ca_path),
            )
        except ssl.SSLError as error:
            raise ConfigError(
                f"TLS: CA file {self.ca_file}: no PEM certificate in it "
                f"({_reason(error)})"
            ) from None

    def _load_certificate(self, context: ssl.SSLContext) -> None:
        assert self.cert_file is not None
        _check_readable(self.cert_file, "certificate file")
        if _pem_labels(self.cert_file).isdisjoint({"CERTIFICATE"}):
            raise ConfigError(
                f"TLS: certificate file {self.cert_file}: no PEM certificate in it"
            )
        key = self.key_file or self.cert_file
        if self.key_file is not None:
            _check_readable(self.key_file, "key file")
        if not any(label.endswith("PRIVATE KEY") for label in _pem_labels(key)):
            raise ConfigError(f"TLS: key file {key}: no PEM private key in it")
        try:
            context.load_cert_chain(str(self.cert_file), str(key), self._password)
        except ssl.SSLError as error:
            reason = _reason(error)
            if "KEY_VALUES_MISMATCH" in reason:
                why = f"key file {key} does not belong to certificate {self.cert_file}"
            elif "BAD_DECRYPT" in reason or _encrypted(key):
                why = (
                    f"key file {key} is encrypted: wrong or missing password "
                    f"(key_password; the CLI and profiles read ${KEY_PASSWORD_ENV})"
                )
            else:
                why = f"cannot use certificate {self.cert_file} with key {key}"
            raise ConfigError(f"TLS: {why} ({reason})") from None

    def _password(self) -> bytes:
        """For OpenSSL, which would otherwise prompt on the terminal."""
        return (self.key_password or "").encode()


def _check_readable(path: Path, what: str, folder: bool = False) -> None:
    try:
        if folder:
            if not path.is_dir():
                raise ConfigError(f"TLS: {what} {path}: no such folder")
            return
        path.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"TLS: {what} {path}: a folder, not a file") from None
    except OSError as error:
        raise ConfigError(f"TLS: {what} {path}: {error.strerror or error}") from None


def _pem_labels(path: Path) -> set[str]:
    """The labels of the PEM blocks in path (``CERTIFICATE``, ``PRIVATE KEY`` ...)."""
    text = path.read_bytes().decode("ascii", "replace")
    labels = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("-----BEGIN ") and line.endswith("-----"):
            labels.add(line[len("-----BEGIN ") : -len("-----")])
    return labels


def _encrypted(path: Path) -> bool:
    """Whether the PEM key in path is encrypted (PKCS #8 or OpenSSL's own)."""
    text = path.read_bytes().decode("ascii", "replace")
    return "ENCRYPTED PRIVATE KEY" in text or "Proc-Type: 4,ENCRYPTED" in text


def _reason(error: ssl.SSLError) -> str:
    return str(getattr(error, "reason", None) or error.strerror or error)


def _reason_of(error: BaseException) -> str | None:
    return _reason(error) if isinstance(error, ssl.SSLError) else None


# -- handshakes ----------------------------------------------------------------------


def wrap_client(
    sock: socket.socket,
    peer: Peer,
    tls: DIMSETLS,
    timeouts: DIMSETimeouts,
    operation: str,
    cancelled: Cancelled = _never,
) -> ssl.SSLSocket:
    """sock, just connected to peer, secured by a TLS handshake as client.

    The handshake may take ``timeouts.connect`` seconds; sock is closed when it
    fails. Raises ConfigError (tls's files), DIMSETLSError (refused for good),
    DIMSETimeoutError, DIMSEConnectionError or AssociationAbortedError.
    """
    try:
        context = tls.client_context()
        secured = context.wrap_socket(
            sock,
            server_hostname=peer.host if context.check_hostname else None,
            do_handshake_on_connect=False,
        )
    except BaseException:
        sock.close()
        raise
    handshake(secured, peer, timeouts, operation, cancelled, server=False)
    if not tls.verify:
        logger.warning(
            "TLS to %s without verifying its certificate: anyone on the way "
            "could pose as the PACS",
            peer,
        )
    return secured


def wrap_server(
    sock: socket.socket,
    peer: Peer,
    tls: DIMSETLS,
    timeouts: DIMSETimeouts,
    operation: str,
    cancelled: Cancelled = _never,
) -> ssl.SSLSocket:
    """sock, just accepted from peer (its address), secured by a TLS handshake
    as server; errors as for :func:`wrap_client`."""
    try:
        secured = tls.server_context().wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        )
    except BaseException:
        sock.close()
        raise
    handshake(secured, peer, timeouts, operation, cancelled, server=True)
    return secured


def handshake(
    sock: ssl.SSLSocket,
    peer: Peer,
    timeouts: DIMSETimeouts,
    operation: str,
    cancelled: Cancelled = _never,
    *,
    server: bool,
) -> None:
    """Run sock's handshake within ``timeouts.connect``, in slices; close sock
    and raise the matching DIMSE error when it fails."""
    deadline = time.monotonic() + timeouts.connect
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DIMSETimeoutError(
                    f"no TLS handshake within {timeouts.connect:g} s",
                    peer=peer,
                    operation=operation,
                )
            if cancelled():
                raise AssociationAbortedError(
                    "aborted during the TLS handshake: cancelled by the caller",
                    peer=peer,
                    operation=operation,
                )
            sock.settimeout(min(SLICE, remaining))
            try:
                sock.do_handshake()
                return
            except TimeoutError:
                continue
            except (ssl.SSLError, OSError) as error:
                if server:
                    _close_gently(sock, plain=_reason_of(error) in _NOT_TLS)
                raise handshake_error(error, peer, operation, server) from error
    except BaseException:
        sock.close()
        raise


#: A fatal TLS alert, protocol_version (RFC 8446 6, 6.2), as a TLS 1.2 record.
PROTOCOL_VERSION_ALERT = b"\x15\x03\x03\x00\x02\x02\x46"
#: Seconds to wait for a refused client to close once it has our alert.
_DRAIN = 0.5


def _close_gently(sock: ssl.SSLSocket, plain: bool) -> None:
    """End a connection whose handshake we (the server) refused so that the
    client learns why.

    Closing with the client's bytes unread (with TLS 1.3 its first request
    follows its side of the handshake at once; a plain client's A-ASSOCIATE-RQ)
    would reset the connection, and a reset may drop our alert before the
    client reads it. So: shut our side, read until the client closes (at most
    half a second), then close. A client that sent no TLS at all (``plain``) gets
    a TLS alert first, which OpenSSL does not send: by it our requestor (or a
    person reading a trace) can tell that the port wants TLS. The plain
    socket's methods, not the SSLSocket's: the TLS session is over or never was.
    """
    deadline = time.monotonic() + _DRAIN
    with contextlib.suppress(OSError):
        if plain:
            socket.socket.sendall(sock, PROTOCOL_VERSION_ALERT)
        socket.socket.shutdown(sock, socket.SHUT_WR)
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if not socket.socket.recv(sock, 65536):
                break


#: OpenSSL reasons that mean the peer's certificate or ours was refused, or
#: the two ends have nothing in common: retrying will not help.
_REFUSED_BY_PEER = {
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the CA of our certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer says our certificate has expired",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer refused our certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "the peer refused our certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
        "the peer requires a client certificate: give ours (--tls-cert and "
        "--tls-key, tls.cert and tls.key in a profile, DIMSETLS(cert_file=..., "
        "key_file=...))"
    ),
    "TLSV1_ALERT_ACCESS_DENIED": "the peer denied access",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "no cipher or protocol in common",
    "NO_SHARED_CIPHER": "no cipher in common",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": (
        "the peer sent no certificate, and one is required"
    ),
}
_NOT_TLS = {
    "WRONG_VERSION_NUMBER",
    "HTTP_REQUEST",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
    "UNKNOWN_PROTOCOL",
    "WRONG_SSL_VERSION",
    "UNEXPECTED_RECORD",
}


def handshake_error(
    error: BaseException, peer: Peer, operation: str, server: bool
) -> DIMSEError:
    """The DIMSE error for a failed handshake (permanent or transient)."""
    who = "the peer" if server else "the PACS"
    if isinstance(error, ssl.SSLCertVerificationError):
        return DIMSETLSError(
            f"TLS: {who}'s certificate was refused: "
            f"{_verification(error, peer, server)}",
            peer=peer,
            operation=operation,
        )
    if isinstance(error, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        if server:
            why = "did it refuse our certificate or its CA?"
        else:
            why = (
                "the peer does not speak TLS on this port, it seems (a plain DICOM "
                "port closes so), or it refused us"
            )
        return AssociationAbortedError(
            f"{who} closed the connection during the TLS handshake: {why}",
            peer=peer,
            operation=operation,
        )
    if isinstance(error, ssl.SSLError):
        reason = _reason(error)
        if reason in _NOT_TLS and server:
            return DIMSETLSError(
                f"TLS handshake failed: the peer does not speak TLS ({reason}): it "
                "connected over plain TCP; it must use TLS for this port",
                peer=peer,
                operation=operation,
            )
        if reason in _REFUSED_BY_PEER:
            return DIMSETLSError(
                f"TLS handshake failed: {_REFUSED_BY_PEER[reason]} ({reason})",
                peer=peer,
                operation=operation,
            )
        if reason in _NOT_TLS:
            return DIMSETLSError(
                f"TLS handshake failed: the peer does not speak TLS on this port: "
                f"it answered our handshake with something else ({reason}), a "
                "DICOM PDU most likely. Connect without TLS, or to the PACS's TLS "
                "port",
                peer=peer,
                operation=operation,
            )
        return DIMSETLSError(
            f"TLS handshake failed: {reason}", peer=peer, operation=operation
        )
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    if isinstance(error, ConnectionResetError) and not server:
        text += " (a plain DICOM port does that: does the peer speak TLS on it?)"
    return DIMSEConnectionError(
        f"connection lost during the TLS handshake: {text}",
        peer=peer,
        operation=operation,
    )


def refusal(error: BaseException, peer: Peer, operation: str) -> DIMSETLSError | None:
    """The permanent error for a TLS alert by which the peer refused us after
    the handshake, or None for any other error.

    With TLS 1.3 the client's side of the handshake ends before the server has
    looked at the client's certificate: a server that requires one, or does
    not trust its CA, says so with an alert that only the first read or write
    of the association meets. A retry would meet it again.
    """
    if not isinstance(error, ssl.SSLError) or isinstance(
        error, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLWantReadError
    ):
        return None
    reason = _reason(error)
    why = _REFUSED_BY_PEER.get(reason)
    if why is None:
        return None
    return DIMSETLSError(
        f"TLS: {why} ({reason}, after the handshake)", peer=peer, operation=operation
    )


def closed_after_handshake(
    sock: ssl.SSLSocket, peer: Peer, operation: str, detail: str
) -> DIMSEError:
    """The error for a TLS peer that closed or reset the connection (detail)
    instead of answering our association request.

    With TLS 1.3, a server refusing the client's certificate sends an alert
    and closes; when our request reaches it before the close, the close is a
    reset that may drop the alert (Orthanc's refusals arrive either way). No
    certificate of ours: that is the likely reason, and permanent. With one,
    the close stays transient (a retry may read the alert), with the hint.
    """
    message = (
        "the peer closed the connection right after the TLS handshake, "
        f"before answering the association request ({detail})"
    )
    if sock.version() != "TLSv1.3":
        return AssociationAbortedError(message, peer=peer, operation=operation)
    if peer.tls is None or peer.tls.cert_file is None:
        return DIMSETLSError(
            f"{message}: it most likely requires a client certificate: give ours "
            "(--tls-cert and --tls-key, tls.cert and tls.key in a profile, "
            "DIMSETLS(cert_file=..., key_file=...))",
            peer=peer,
            operation=operation,
        )
    return AssociationAbortedError(
        f"{message}; if it persists, the peer may refuse our certificate "
        f"{peer.tls.cert_file} (does it trust its CA?)",
        peer=peer,
        operation=operation,
    )


def _verification(error: ssl.SSLCertVerificationError, peer: Peer, server: bool) -> str:
    message = str(error.verify_message or error.reason or error)
    code = error.verify_code
    if code in (18, 19, 20, 21, 2):  # self-signed, unknown issuer, ...
        return (
            f"{message}: its CA is not one we trust; give the CA certificate "
            "(--tls-ca, tls.ca, DIMSETLS(ca_file=...))"
        )
    if code == 10:
        return f"{message}: it must be renewed"
    if code == 9:
        return f"{message}: check the clocks"
    if code in (62, 64) and not server:
        return (
            f"{message}: it was not issued for {peer.host!r}; connect by a "
            "name or address the certificate holds"
        )
    return message
