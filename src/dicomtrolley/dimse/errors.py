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
    ├── DIMSETLSError                TLS handshake refused (certificate, CA ...)   (Permanent)
    └── DIMSEStatusError             a failure or cancel status                    (Permanent)
        ├── MoveDestinationUnknownError   A801: register the move destination
        └── SubOperationError        instances the PACS did not deliver (UIDs)
"""

from __future__ import annotations

from collections.abc import Iterable

from dicomtrolley.dimse.settings import Peer
from dicomtrolley.exceptions import (
    DICOMTrolleyConnectionError,
    DICOMTrolleyError,
    DICOMTrolleyTimeoutError,
    PermanentError,
    TransientError,
)

MOVE_DESTINATION_UNKNOWN = 0xA801

#: Statuses any DIMSE service may answer (PS3.7 annex C).
_GENERAL_STATUS = {
    0x0000: "Success",
    0xFE00: "Cancel",
    0x0105: "Failure: No such attribute",
    0x0106: "Failure: Invalid attribute value",
    0x0107: "Warning: Attribute list error",
    0x0110: "Failure: Processing failure",
    0x0111: "Failure: Duplicate SOP instance",
    0x0112: "Failure: No such SOP instance",
    0x0116: "Warning: Attribute value out of range",
    0x0117: "Failure: Invalid object instance",
    0x0118: "Failure: No such SOP class",
    0x0119: "Failure: Class-instance conflict",
    0x0120: "Failure: Missing attribute",
    0x0121: "Failure: Missing attribute value",
    0x0122: "Refused: SOP class not supported",
    0x0124: "Refused: Not authorized",
    0x0210: "Failure: Duplicate invocation",
    0x0211: "Failure: Unrecognized operation",
    0x0212: "Failure: Mistyped argument",
    0x0213: "Failure: Resource limitation",
}
#: C-GET and C-MOVE (PS3.4 C.4.2.1.5, C.4.3.1.4).
_RETRIEVE_STATUS = {
    0xA701: "Refused: Out of resources, cannot count the matches",
    0xA702: "Refused: Out of resources, cannot perform the sub-operations",
    0xA900: "Error: Identifier does not match SOP class",
    0xAA00: "Failure: None of the requested frames was found",
    0xAA01: "Failure: Cannot create a new object of this SOP class",
    0xAA02: "Failure: Cannot extract the frames",
    0xAA03: "Failure: Time-based request for an instance that is not time-based",
    0xAA04: "Failure: Invalid request",
    0xB000: "Warning: Sub-operations complete, some failed or warned",
    0xFF00: "Pending: Sub-operations are continuing",
}
_STATUS_TABLES: dict[str, dict[int, str]] = {
    "C-FIND": {  # PS3.4 C.4.1.1.4
        0xA700: "Refused: Out of resources",
        0xA900: "Error: Identifier does not match SOP class",
        0xFF00: "Pending: Matches are continuing",
        0xFF01: "Pending: Matches are continuing, some optional keys unsupported",
    },
    "C-GET": _RETRIEVE_STATUS,
    "C-MOVE": {**_RETRIEVE_STATUS, 0xA801: "Refused: Move destination unknown"},
    "C-STORE": {  # PS3.4 B.2.3
        0xB000: "Warning: Coercion of data elements",
        0xB006: "Warning: Elements discarded",
        0xB007: "Warning: Data set does not match SOP class",
    },
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
    known = _STATUS_TABLES.get(operation, {}).get(code) or _GENERAL_STATUS.get(code)
    if known is not None:
        meaning = known
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
