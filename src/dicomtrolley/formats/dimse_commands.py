"""DIMSE-C command sets (PS3.7 9.3, field meanings in 9.1 and E.1), sans-I/O.

One builder per message, each returning the encoded command set (group 0000,
Implicit VR Little Endian, group length first) through
:func:`~dicomtrolley.formats.dul.encode_command`, with the Command Field and
Command Data Set Type the message needs. Read answers with
:func:`~dicomtrolley.formats.dul.decode_command` and
:func:`~dicomtrolley.formats.dul.command_int` / ``command_str``.

Values out of range (a message ID above 65535, a non-ASCII UID) raise
:class:`~dicomtrolley.formats.dul.DULValueError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from functools import partial

from dicomtrolley.formats.dul import (
    AFFECTED_SOP_CLASS_UID,
    AFFECTED_SOP_INSTANCE_UID,
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_FIND_RQ,
    C_FIND_RSP,
    C_GET_RQ,
    C_GET_RSP,
    C_MOVE_RQ,
    C_MOVE_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    COMMAND_DATA_SET_TYPE,
    COMMAND_FIELD,
    COMPLETED,
    DATASET_PRESENT,
    ERROR_COMMENT,
    FAILED,
    MESSAGE_ID,
    MESSAGE_ID_BEING_RESPONDED_TO,
    MOVE_DESTINATION,
    MOVE_ORIGINATOR_AET,
    MOVE_ORIGINATOR_MESSAGE_ID,
    NO_DATASET,
    OFFENDING_ELEMENT,
    PRIORITY,
    REMAINING,
    STATUS,
    WARNING,
    CommandValue,
    DULValueError,
    encode_command,
)

#: The Verification SOP Class (PS3.4 A.4), C-ECHO's only abstract syntax.
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

# Priority (0000,0700), PS3.7 9.1.1.1
MEDIUM = 0x0000
HIGH = 0x0001
LOW = 0x0002

# Status classes (PS3.7 C)
SUCCESS = 0x0000
CANCEL = 0xFE00
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # C-FIND: optional keys not supported

COMMAND_NAMES = {
    C_STORE_RQ: "C-STORE-RQ",
    C_STORE_RSP: "C-STORE-RSP",
    C_GET_RQ: "C-GET-RQ",
    C_GET_RSP: "C-GET-RSP",
    C_FIND_RQ: "C-FIND-RQ",
    C_FIND_RSP: "C-FIND-RSP",
    C_MOVE_RQ: "C-MOVE-RQ",
    C_MOVE_RSP: "C-MOVE-RSP",
    C_ECHO_RQ: "C-ECHO-RQ",
    C_ECHO_RSP: "C-ECHO-RSP",
    C_CANCEL_RQ: "C-CANCEL-RQ",
}

#: Error Comment (0000,0902) is LO: at most 64 characters.
_MAX_COMMENT = 64
_TAG = struct.Struct("<HH")


def is_pending(status: int) -> bool:
    """Whether status says more responses follow (0xFF00, 0xFF01)."""
    return status in (PENDING, PENDING_WARNING)


def _request(
    field: int, message_id: int, sop_class_uid: str, dataset: bool
) -> dict[int, CommandValue]:
    return {
        AFFECTED_SOP_CLASS_UID: sop_class_uid,
        COMMAND_FIELD: field,
        MESSAGE_ID: message_id,
        COMMAND_DATA_SET_TYPE: DATASET_PRESENT if dataset else NO_DATASET,
    }


def _response(
    field: int,
    responding_to: int,
    sop_class_uid: str,
    status: int,
    dataset: bool,
    error_comment: str | None,
    offending_elements: Iterable[int],
) -> dict[int, CommandValue]:
    elements: dict[int, CommandValue] = {
        AFFECTED_SOP_CLASS_UID: sop_class_uid,
        COMMAND_FIELD: field,
        MESSAGE_ID_BEING_RESPONDED_TO: responding_to,
        COMMAND_DATA_SET_TYPE: DATASET_PRESENT if dataset else NO_DATASET,
        STATUS: status,
    }
    if not sop_class_uid:
        del elements[AFFECTED_SOP_CLASS_UID]
    tags = b"".join(_tag(tag) for tag in offending_elements)
    if tags:
        elements[OFFENDING_ELEMENT] = tags
    if error_comment:
        elements[ERROR_COMMENT] = error_comment[:_MAX_COMMENT]
    return elements


def _tag(tag: int) -> bytes:
    """An AT value: (group, element) as two little-endian US."""
    if not 0 <= tag <= 0xFFFFFFFF:
        raise DULValueError(f"offending element {tag:#x} is not a DICOM tag")
    return _TAG.pack(tag >> 16, tag & 0xFFFF)


def _counts(
    remaining: int | None,
    completed: int | None,
    failed: int | None,
    warning: int | None,
) -> dict[int, CommandValue]:
    given = {
        REMAINING: remaining,
        COMPLETED: completed,
        FAILED: failed,
        WARNING: warning,
    }
    return {element: value for element, value in given.items() if value is not None}


# -- C-ECHO (PS3.7 9.3.5) -------------------------------------------------------


def c_echo_rq(message_id: int, sop_class_uid: str = VERIFICATION_SOP_CLASS) -> bytes:
    return encode_command(_request(C_ECHO_RQ, message_id, sop_class_uid, False))


def c_echo_rsp(
    responding_to: int,
    status: int = SUCCESS,
    sop_class_uid: str = VERIFICATION_SOP_CLASS,
    *,
    error_comment: str | None = None,
) -> bytes:
    return encode_command(
        _response(
            C_ECHO_RSP, responding_to, sop_class_uid, status, False, error_comment, ()
        )
    )


# -- C-STORE (PS3.7 9.3.1) ------------------------------------------------------


def c_store_rq(
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    *,
    priority: int = MEDIUM,
    move_originator_aet: str | None = None,
    move_originator_message_id: int | None = None,
) -> bytes:
    """The command of a C-STORE request; the data set follows it.

    The move originator fields are for a C-STORE made on behalf of a C-MOVE
    (PS3.7 9.1.1.1: the C-MOVE requestor's AE title and message ID).
    """
    elements = _request(C_STORE_RQ, message_id, sop_class_uid, True)
    elements[PRIORITY] = priority
    elements[AFFECTED_SOP_INSTANCE_UID] = sop_instance_uid
    if move_originator_aet is not None:
        elements[MOVE_ORIGINATOR_AET] = move_originator_aet
    if move_originator_message_id is not None:
        elements[MOVE_ORIGINATOR_MESSAGE_ID] = move_originator_message_id
    return encode_command(elements)


def c_store_rsp(
    responding_to: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    status: int = SUCCESS,
    *,
    error_comment: str | None = None,
    offending_elements: Iterable[int] = (),
) -> bytes:
    elements = _response(
        C_STORE_RSP,
        responding_to,
        sop_class_uid,
        status,
        False,
        error_comment,
        offending_elements,
    )
    elements[AFFECTED_SOP_INSTANCE_UID] = sop_instance_uid
    return encode_command(elements)


# -- C-FIND (PS3.7 9.3.2) -------------------------------------------------------


def c_find_rq(message_id: int, sop_class_uid: str, *, priority: int = MEDIUM) -> bytes:
    """The command of a C-FIND request; the identifier follows it."""
    elements = _request(C_FIND_RQ, message_id, sop_class_uid, True)
    elements[PRIORITY] = priority
    return encode_command(elements)


def c_find_rsp(
    responding_to: int,
    sop_class_uid: str,
    status: int,
    *,
    dataset: bool | None = None,
    error_comment: str | None = None,
    offending_elements: Iterable[int] = (),
) -> bytes:
    """A C-FIND response; an identifier follows when ``dataset`` is true
    (default: for a pending status, PS3.4 C.4.1.1.4)."""
    present = is_pending(status) if dataset is None else dataset
    return encode_command(
        _response(
            C_FIND_RSP,
            responding_to,
            sop_class_uid,
            status,
            present,
            error_comment,
            offending_elements,
        )
    )


# -- C-GET and C-MOVE (PS3.7 9.3.3, 9.3.4) ---------------------------------------


def c_get_rq(message_id: int, sop_class_uid: str, *, priority: int = MEDIUM) -> bytes:
    """The command of a C-GET request; the identifier follows it."""
    elements = _request(C_GET_RQ, message_id, sop_class_uid, True)
    elements[PRIORITY] = priority
    return encode_command(elements)


def c_move_rq(
    message_id: int,
    sop_class_uid: str,
    move_destination: str,
    *,
    priority: int = MEDIUM,
) -> bytes:
    """The command of a C-MOVE request to move_destination (an AE title); the
    identifier follows it."""
    elements = _request(C_MOVE_RQ, message_id, sop_class_uid, True)
    elements[PRIORITY] = priority
    elements[MOVE_DESTINATION] = move_destination
    return encode_command(elements)


def retrieve_rsp(
    field: int,
    responding_to: int,
    sop_class_uid: str,
    status: int,
    *,
    remaining: int | None = None,
    completed: int | None = None,
    failed: int | None = None,
    warning: int | None = None,
    dataset: bool = False,
    error_comment: str | None = None,
    offending_elements: Iterable[int] = (),
) -> bytes:
    """A C-GET or C-MOVE response (field: C_GET_RSP or C_MOVE_RSP; use
    :func:`c_get_rsp` / :func:`c_move_rsp`). Counts left at None are omitted
    (Remaining is required while pending); ``dataset``: an identifier with the
    Failed SOP Instance UID List follows."""
    elements = _response(
        field,
        responding_to,
        sop_class_uid,
        status,
        dataset,
        error_comment,
        offending_elements,
    )
    elements.update(_counts(remaining, completed, failed, warning))
    return encode_command(elements)


#: ``c_get_rsp(responding_to, sop_class_uid, status, *, remaining=...)``
c_get_rsp = partial(retrieve_rsp, C_GET_RSP)
#: ``c_move_rsp(responding_to, sop_class_uid, status, *, remaining=...)``
c_move_rsp = partial(retrieve_rsp, C_MOVE_RSP)


# -- C-CANCEL (PS3.7 9.3.2.3, 9.3.3.3, 9.3.4.3) ----------------------------------


def c_cancel_rq(responding_to: int) -> bytes:
    """Cancel the C-FIND, C-GET or C-MOVE whose message ID is responding_to."""
    return encode_command(
        {
            COMMAND_FIELD: C_CANCEL_RQ,
            MESSAGE_ID_BEING_RESPONDED_TO: responding_to,
            COMMAND_DATA_SET_TYPE: NO_DATASET,
        }
    )
