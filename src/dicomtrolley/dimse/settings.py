"""Who to talk to (over TLS or not) and how long to wait: :class:`Peer` and
:class:`DIMSETimeouts`.

Both are small immutable value objects, shared by every DIMSE operation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicomtrolley.dimse.tls import DIMSETLS

#: Where the CLI and profiles read the password of an encrypted TLS key.
KEY_PASSWORD_ENV = "DICOMTROLLEY_TLS_KEY_PASSWORD"
#: The longest AE title DICOM allows (PS3.5 table 6.2-1, VR AE).
MAX_AE_TITLE_LENGTH = 16


def check_ae_title(title: str, what: str = "AE title") -> str:
    """title if it is a valid AE title (1-16 printable ASCII characters, no backslash).

    Raises ValueError otherwise.
    """
    stripped = title.strip()
    if not stripped or len(stripped) > MAX_AE_TITLE_LENGTH:
        raise ValueError(f"{what} {title!r} must be 1 to 16 characters")
    if not all(32 <= ord(char) < 127 for char in stripped) or "\\" in stripped:
        raise ValueError(
            f"{what} {title!r} may only hold printable ASCII characters, no backslash"
        )
    return stripped


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity to associate with, and who we are to it.

    Parameters
    ----------
    host, port:
        Where the remote AE listens.
    aet:
        Our own (calling) AE title.
    aec:
        The remote (called) AE title.
    tls:
        How to secure the connection (:class:`~dicomtrolley.dimse.tls.DIMSETLS`);
        None: plain TCP.
    """

    host: str
    port: int
    aet: str = "DICOMTROLLEY"
    aec: str = "ANY-SCP"
    tls: DIMSETLS | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("a DICOM peer needs a host")
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"port {self.port} is not a TCP port number")
        object.__setattr__(self, "port", int(self.port))
        object.__setattr__(self, "aet", check_ae_title(self.aet, "calling AE title"))
        object.__setattr__(self, "aec", check_ae_title(self.aec, "called AE title"))

    def __str__(self) -> str:
        over = "TLS, " if self.tls is not None else ""
        return f"{self.aec} at {self.host}:{self.port} ({over}calling AE {self.aet})"


def _check_seconds(name: str, value: float | None, allow_none: bool) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} timeout must be a number of seconds")
    number = float(value)
    if not 0 < number < math.inf:
        raise ValueError(f"{name} timeout must be a positive number, not {value!r}")
    return number


@dataclass(frozen=True)
class DIMSETimeouts:
    """How long a DIMSE operation may wait, in seconds.

    Parameters
    ----------
    connect:
        For the TCP connection and, again, for the answer to the association
        request (as acceptor: for the association request).
    idle:
        The longest silence from the peer: no PDU received (and, for C-MOVE, no
        data on the storage association either) for this long aborts the
        operation. Every pending response and every received C-STORE resets it;
        a large instance arriving slowly keeps it alive too, since each PDU counts.
    total:
        The longest a whole operation (one C-FIND, one C-GET or C-MOVE) may take,
        however active the peer is. ``None``: no limit.
    """

    connect: float = 10.0
    idle: float = 60.0
    total: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "connect", _check_seconds("connect", self.connect, False)
        )
        object.__setattr__(self, "idle", _check_seconds("idle", self.idle, False))
        object.__setattr__(self, "total", _check_seconds("total", self.total, True))

    @classmethod
    def coerce(cls, value: Any) -> DIMSETimeouts:
        """Accept DIMSETimeouts, one number (the idle timeout), None (defaults), or
        an HTTP :class:`~dicomtrolley.transport.Timeout` (connect, read -> idle)."""
        if value is None:
            return cls()
        if isinstance(value, DIMSETimeouts):
            return value
        if isinstance(value, int | float):
            return cls(idle=float(value))
        connect = getattr(value, "connect", None)
        read = getattr(value, "read", None)
        if connect is not None or read is not None:
            defaults = cls()
            return cls(
                connect=connect if connect is not None else defaults.connect,
                idle=read if read is not None else defaults.idle,
            )
        raise TypeError(f"cannot use {value!r} as DIMSE timeouts")


DEFAULT_TIMEOUTS = DIMSETimeouts()
