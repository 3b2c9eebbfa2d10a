"""Errors of DIMSE operations, and what a DIMSE status means (PS3.7 annex C, PS3.4).

Every error names the peer (host, port, both AE titles) and, where there is one,
the status it answered. :class:`DIMSEError` sits in no branch of its own (like
``HTTPStatusError``): catch it for every DIMSE failure, or catch the
transient/permanent branches of :mod:`dicomtrolley.exceptions`::

    DIMSEError
    ├── DIMSEConnectionError         refused, unreachable, reset   (a DICOMTrolleyConnectionError)
    │   ├── DIMSETimeoutError        connect, association, idle or total timeout
    │   └── AssociationAbortedError  A-ABORT or closed connection mid-operation
    ├── AssociationBusyError         rejected-transient (congestion, local limit)  (Transient)
    ├── DIMSEOutOfResourcesError     status A7xx: refused, out of resources        (Transient)
    ├── AssociationRejectedError     rejected-permanent (unknown AE title ...)     (Permanent)
    ├── ServiceNotSupportedError     the peer accepted none of the needed contexts (Permanent)
    ├── StoreSCPError                cannot listen for C-MOVE sub-operations       (Permanent)
    └── DIMSEStatusError             a failure or cancel status                    (Permanent)
        ├── MoveDestinationUnknownError   A801: register the move destination
        └── SubOperationError        instances the PACS did not deliver (UIDs)
"""

from __future__ import annotations

from collections.abc import Iterable

from pynetdicom.status import (
    GENERAL_STATUS,
    QR_FIND_SERVICE_CLASS_STATUS,
    QR_GET_SERVICE_CLASS_STATUS,
    QR_MOVE_SERVICE_CLASS_STATUS,
    STORAGE_SERVICE_CLASS_STATUS,
)

from dicomtrolley.dimse.settings import Peer
from dicomtrolley.exceptions import (
    DICOMTrolleyConnectionError,
    DICOMTrolleyError,
    DICOMTrolleyTimeoutError,
    PermanentError,
    TransientError,
)

MOVE_DESTINATION_UNKNOWN = 0xA801

_STATUS_TABLES = {
    "C-FIND": QR_FIND_SERVICE_CLASS_STATUS,
    "C-GET": QR_GET_SERVICE_CLASS_STATUS,
    "C-MOVE": QR_MOVE_SERVICE_CLASS_STATUS,
    "C-STORE": STORAGE_SERVICE_CLASS_STATUS,
}


class DIMSEError(DICOMTrolleyError):
    """A DIMSE operation failed. ``peer`` and ``status`` say where and how.

    Parameters
    ----------
    message:
        What went wrong; the peer is added in front when given.
    peer:
        The remote AE (host, port, called and calling AE title).
    status:
        The DIMSE status the peer answered, if any.
    operation:
        ``C-FIND``, ``C-GET``, ``C-MOVE`` ... for the message.
    """

    def __init__(
        self,
        message: str = "",
        *,
        peer: Peer | None = None,
        status: int | None = None,
        operation: str = "",
        uids: Iterable[str] = (),
    ) -> None:
        self.peer = peer
        self.status = status
        self.operation = operation
        where = ""
        if peer is not None:
            where = f"{operation} with {peer}" if operation else str(peer)
        elif operation:
            where = operation
        super().__init__(f"{where}: {message}" if where else message, uids=uids)

    @property
    def host(self) -> str | None:
        return self.peer.host if self.peer else None

    @property
    def port(self) -> int | None:
        return self.peer.port if self.peer else None

    @property
    def calling_aet(self) -> str | None:
        return self.peer.aet if self.peer else None

    @property
    def called_aet(self) -> str | None:
        return self.peer.aec if self.peer else None


class DIMSEConnectionError(DIMSEError, DICOMTrolleyConnectionError):
    """No connection to the peer, or it broke: refused, unreachable, reset."""


class DIMSETimeoutError(DIMSEConnectionError, DICOMTrolleyTimeoutError):
    """The peer did not connect, accept, answer or finish in time."""


class AssociationAbortedError(DIMSEConnectionError):
    """The association was aborted (A-ABORT, A-P-ABORT) or the connection closed."""


class AssociationBusyError(DIMSEError, TransientError):
    """The peer rejected the association for now (rejected-transient)."""


class DIMSEOutOfResourcesError(DIMSEError, TransientError):
    """Status A7xx: the peer is out of resources. May work later."""


class AssociationRejectedError(DIMSEError, PermanentError):
    """The peer rejected the association for good (unknown AE title ...)."""


class ServiceNotSupportedError(DIMSEError, PermanentError):
    """The peer accepted the association but not what the operation needs
    (the query/retrieve model, any storage context, or the SCP role for C-GET)."""


class StoreSCPError(DIMSEError, PermanentError):
    """The storage SCP for C-MOVE sub-operations cannot start (port in use ...)."""


class DIMSEStatusError(DIMSEError, PermanentError):
    """The peer answered a failure (or cancel) status."""


class MoveDestinationUnknownError(DIMSEStatusError):
    """Status A801: the PACS does not know the C-MOVE destination AE title."""


class SubOperationError(DIMSEStatusError):
    """Instances a C-GET or C-MOVE should have delivered but did not. ``uids``."""


def describe_status(code: int, operation: str = "") -> str:
    """``0xA700 (Refused: Out of resources)``: a status with its meaning (PS3.4, PS3.7)."""
    table = _STATUS_TABLES.get(operation, {})
    known = table.get(code) or GENERAL_STATUS.get(code)
    if known is not None and known[1]:
        meaning = known[1]
    elif known is not None:
        meaning = known[0]
    elif code & 0xFF00 == 0xA700:
        meaning = "Refused: Out of resources"
    elif code & 0xFF00 == 0xA900:
        meaning = "Error: Identifier does not match SOP class"
    elif code & 0xF000 == 0xC000:
        meaning = "Failed: Unable to process"
    elif code & 0xF000 == 0xA000:
        meaning = "Failure"
    elif code & 0xF000 == 0xB000:
        meaning = "Warning"
    else:
        meaning = "unknown status"
    return f"0x{code:04X} ({meaning})"


def is_out_of_resources(code: int) -> bool:
    return code & 0xFF00 == 0xA700


def status_error(
    code: int,
    *,
    peer: Peer,
    operation: str,
    comment: str = "",
    hint: str = "",
    uids: Iterable[str] = (),
) -> DIMSEError:
    """The exception for a failure or cancel status ``code`` (not raised here)."""
    text = f"failed with status {describe_status(code, operation)}"
    if comment:
        text += f": {comment}"
    if hint:
        text += f". {hint}"
    cls: type[DIMSEError]
    if code == MOVE_DESTINATION_UNKNOWN:
        cls = MoveDestinationUnknownError
    elif is_out_of_resources(code):
        cls = DIMSEOutOfResourcesError
    else:
        cls = DIMSEStatusError
    return cls(text, peer=peer, status=code, operation=operation, uids=uids)
