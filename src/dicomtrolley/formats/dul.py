"""DICOM Upper Layer framing (PS3.8 9.3) and DIMSE command sets (PS3.7 E), sans-I/O.

Our associations (:mod:`dicomtrolley.dimse.link`) run from the calling
thread, without a reactor thread; this module holds their byte-level parts,
none of which does I/O:

* :class:`PDUReader` is fed whatever the socket returned, in pieces split
  anywhere, and yields complete PDUs: a :class:`Fragment` per presentation data
  value of a P-DATA-TF PDU (a zero-copy view of the fed bytes), a :class:`PDU`
  (type and whole raw bytes) for the others. A-ASSOCIATE-RQ/AC/RJ are decoded
  and encoded by :mod:`dicomtrolley.formats.association` (negotiation in
  :mod:`dicomtrolley.formats.negotiation`); A-RELEASE and A-ABORT are trivial.
* :func:`p_data` splits a DIMSE message into P-DATA-TF PDUs within the peer's
  maximum length; :func:`release_rq`, :func:`release_rp` and :func:`abort`
  encode the small PDUs.
* :func:`encode_command` / :func:`decode_command` handle DIMSE command sets:
  group 0000 in Implicit VR Little Endian, always (PS3.7 6.3.1). One builder
  per DIMSE-C message is in :mod:`dicomtrolley.formats.dimse_commands`.

Why by hand: a general-purpose stack that encodes and decodes command sets
through pydicom Datasets and passes every PDU through its state machine and two
queues on a reactor thread costs about 50 microseconds per PDU and several
thread hand-overs per instance; these functions are plain byte work (see
benchmarks/dimse.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from dicomtrolley.exceptions import PermanentError

# PDU types (PS3.8 9.3.1)
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07
PDU_TYPES = frozenset(range(1, 8))

#: Larger PDUs are refused (a peer must keep to the maximum we announce).
MAX_PDU_LENGTH = 16 * 1024 * 1024

_HEADER = struct.Struct(">BxL")
_PDV_HEADER = struct.Struct(">LBB")
_ELEMENT = struct.Struct("<HHL")

# Command fields (PS3.7 E.1)
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_GET_RQ = 0x0010
C_GET_RSP = 0x8010
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_MOVE_RQ = 0x0021
C_MOVE_RSP = 0x8021
C_CANCEL_RQ = 0x0FFF
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
#: CommandDataSetType value meaning "no data set follows"
NO_DATASET = 0x0101
#: CommandDataSetType we send when a data set follows (any other value does)
DATASET_PRESENT = 0x0001

# Command elements (group 0000), by element number, and how their values are held
COMMAND_GROUP_LENGTH = 0x0000
AFFECTED_SOP_CLASS_UID = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
MOVE_DESTINATION = 0x0600
PRIORITY = 0x0700
COMMAND_DATA_SET_TYPE = 0x0800
STATUS = 0x0900
OFFENDING_ELEMENT = 0x0901
ERROR_COMMENT = 0x0902
ERROR_ID = 0x0903
AFFECTED_SOP_INSTANCE_UID = 0x1000
REMAINING = 0x1020
COMPLETED = 0x1021
FAILED = 0x1022
WARNING = 0x1023
MOVE_ORIGINATOR_AET = 0x1030
MOVE_ORIGINATOR_MESSAGE_ID = 0x1031

_US = frozenset(
    {
        COMMAND_FIELD,
        MESSAGE_ID,
        MESSAGE_ID_BEING_RESPONDED_TO,
        PRIORITY,
        COMMAND_DATA_SET_TYPE,
        STATUS,
        ERROR_ID,
        REMAINING,
        COMPLETED,
        FAILED,
        WARNING,
        MOVE_ORIGINATOR_MESSAGE_ID,
    }
)
_UL = frozenset({COMMAND_GROUP_LENGTH})
_TEXT = {  # element -> padding byte (UI: NUL, AE/LO: space)
    AFFECTED_SOP_CLASS_UID: b"\0",
    0x0003: b"\0",  # Requested SOP Class UID
    AFFECTED_SOP_INSTANCE_UID: b"\0",
    0x1001: b"\0",  # Requested SOP Instance UID
    MOVE_DESTINATION: b" ",
    MOVE_ORIGINATOR_AET: b" ",
    ERROR_COMMENT: b" ",
}

CommandValue = int | str | bytes


class DULProtocolError(PermanentError):
    """The peer sent bytes that are not valid DICOM upper layer PDUs or commands."""


class DULValueError(PermanentError):
    """A value that cannot be encoded into a PDU or a command set (an AE title
    that is not one, a UID too long, a number out of its range)."""


@dataclass(frozen=True, slots=True)
class PDU:
    """A PDU other than P-DATA-TF: its type and all its bytes (header included)."""

    type: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class Fragment:
    """One presentation data value: a piece of a command or data set."""

    context_id: int
    command: bool
    last: bool
    data: memoryview


Event = PDU | Fragment


#: The buffer of :meth:`PDUReader.receive` at first (enough for C-FIND,
#: C-ECHO and small instances); four times larger each time a read fills it,
#: up to its ``size`` (4 MiB for a link).
FIRST_BLOCK = 1 << 18
RECEIVE_SIZE = 1 << 22


class PDUReader:
    """Turns a byte stream into PDUs and P-DATA fragments, in any pieces.

    Two ways to give it bytes:

    * :meth:`feed` takes ``bytes`` (never changed afterwards); its fragments
      are views of them, valid as long as the caller holds them;
    * :meth:`receive` has a reader (a socket's ``recv_into``) fill a buffer of
      its own, so that nothing is copied on the way from the socket to the
      fragments; they are views of that buffer, valid until the next call
      (whoever keeps a piece copies it).
    """

    def __init__(self, max_length: int = MAX_PDU_LENGTH) -> None:
        self.max_length = max_length
        self._pending = b""
        self._buffer = bytearray()
        self._view = memoryview(self._buffer)
        self._start = 0  # in _buffer: the first byte not parsed yet
        self._end = 0  # in _buffer: the end of what was received
        self._filled = False  # the last read filled the buffer

    @property
    def buffered(self) -> int:
        """Bytes held back: the start of a PDU that is not complete yet."""
        return len(self._pending) + self._end - self._start

    def feed(self, data: bytes) -> list[Event]:
        if self._pending:
            data = self._pending + data
        events: list[Event] = []
        pos = self._parse(memoryview(data), 0, len(data), events)
        self._pending = data[pos:] if pos < len(data) else b""
        return events

    def receive(
        self, recv_into: Callable[[memoryview], int], size: int = RECEIVE_SIZE
    ) -> list[Event] | None:
        """Read once with ``recv_into`` into the reader's buffer (of at most
        ``size`` bytes, unless a PDU needs more) and parse what came; None when
        it read nothing (the peer closed).

        The events of the previous call are invalid from here on: their bytes
        may be overwritten.
        """
        start, end = self._start, self._end
        pending = end - start  # the start of an incomplete PDU
        if not pending:
            start = end = 0
        capacity = len(self._buffer)
        grow = capacity < FIRST_BLOCK or (self._filled and capacity < size)
        if grow:  # more was waiting than the buffer took: read more at once
            capacity = min(size, max(FIRST_BLOCK, 4 * capacity))
        room = capacity // 4  # free space below which pending moves to the front
        if pending + room > capacity:  # a PDU larger than the buffer
            capacity, grow = 2 * (pending + room), True
        if grow:
            grown = bytearray(capacity)
            grown[:pending] = self._view[start:end]
            self._buffer, self._view = grown, memoryview(grown)
            start, end = 0, pending
        elif capacity - end < room:
            if start >= pending:
                self._buffer[:pending] = self._view[start:end]
            else:  # overlapping
                self._buffer[:pending] = bytes(self._view[start:end])
            start, end = 0, pending
        self._start, self._end = start, end
        free = self._view[end:]
        count = recv_into(free)
        if not count:
            return None
        self._filled = count == len(free)
        end += count
        events: list[Event] = []
        self._start = self._parse(self._view, start, end, events)
        self._end = end
        return events

    def _parse(self, view: memoryview, pos: int, size: int, events: list[Event]) -> int:
        """Append the complete PDUs of view[pos:size] to events; where the
        first incomplete one starts."""
        while size - pos >= 6:
            pdu_type, length = _HEADER.unpack_from(view, pos)
            if pdu_type not in PDU_TYPES:
                raise DULProtocolError(
                    f"unknown PDU type 0x{pdu_type:02X} in the stream"
                )
            if length > self.max_length:
                raise DULProtocolError(
                    f"PDU of {length} bytes is larger than the {self.max_length} "
                    "allowed"
                )
            end = pos + 6 + length
            if end > size:
                break
            if pdu_type == P_DATA_TF:
                _fragments(view, pos + 6, end, events)
            else:
                events.append(PDU(pdu_type, bytes(view[pos:end])))
            pos = end
        return pos


def _fragments(view: memoryview, pos: int, end: int, out: list[Event]) -> None:
    """The presentation data values of a P-DATA-TF PDU body view[pos:end]."""
    if pos == end:
        raise DULProtocolError("P-DATA-TF PDU without presentation data values")
    while pos < end:
        if end - pos < 6:
            raise DULProtocolError("P-DATA-TF PDU ends inside a PDV item header")
        length, context_id, control = _PDV_HEADER.unpack_from(view, pos)
        if length < 2 or pos + 4 + length > end:
            raise DULProtocolError(
                f"PDV item length {length} does not fit its P-DATA-TF PDU"
            )
        out.append(
            Fragment(
                context_id,
                bool(control & 1),
                bool(control & 2),
                view[pos + 6 : pos + 4 + length],
            )
        )
        pos += 4 + length


def p_data(
    context_id: int, payload: bytes, *, command: bool, max_length: int
) -> Iterator[bytes]:
    """P-DATA-TF PDUs carrying payload, one fragment each.

    ``max_length`` is the peer's Maximum Length Received (the largest PDU
    variable field it takes; 0: no limit).
    """
    room = max_length - 6 if max_length else len(payload) or 1
    if room < 1:
        raise DULProtocolError(f"peer's maximum PDU length {max_length} is too small")
    control = 1 if command else 0
    start = 0
    while True:
        piece = payload[start : start + room]
        start += len(piece)
        last = start >= len(payload)
        flags = control | (2 if last else 0)
        yield (
            _HEADER.pack(P_DATA_TF, len(piece) + 6)
            + _PDV_HEADER.pack(len(piece) + 2, context_id, flags)
            + piece
        )
        if last:
            return


def release_rq() -> bytes:
    return _HEADER.pack(A_RELEASE_RQ, 4) + b"\0\0\0\0"


def release_rp() -> bytes:
    return _HEADER.pack(A_RELEASE_RP, 4) + b"\0\0\0\0"


def abort(source: int = 0, reason: int = 0) -> bytes:
    """A-ABORT (source 0: service user, 2: service provider)."""
    return _HEADER.pack(A_ABORT, 4) + bytes((0, 0, source, reason))


def abort_reason(pdu: PDU) -> tuple[int, int]:
    """(source, reason/diagnostic) of an A-ABORT PDU."""
    raw = pdu.raw
    return (raw[8], raw[9]) if len(raw) >= 10 else (0, 0)


def encode_command(elements: Mapping[int, CommandValue]) -> bytes:
    """A command set (group 0000, Implicit VR LE) with its group length first.

    ``elements`` maps element numbers to values: int for US elements, str for
    UIDs, AE titles and texts, bytes for anything else (already encoded).
    """
    body = bytearray()
    for element in sorted(elements):
        if element == COMMAND_GROUP_LENGTH:
            continue
        value = elements[element]
        encoded: bytes
        if isinstance(value, int):
            if not 0 <= value <= 0xFFFF:
                raise DULValueError(
                    f"command element (0000,{element:04X}) value {value} is not "
                    "within 0 to 65535"
                )
            encoded = struct.pack("<H", value)
        elif isinstance(value, str):
            if not value.isascii():
                raise DULValueError(
                    f"command element (0000,{element:04X}) value {value!r} is not ASCII"
                )
            encoded = value.encode("ascii")
            if len(encoded) % 2:
                encoded += _TEXT.get(element, b" ")
        else:
            encoded = bytes(value)
        body += _ELEMENT.pack(0x0000, element, len(encoded)) + encoded
    return (
        _ELEMENT.pack(0x0000, COMMAND_GROUP_LENGTH, 4)
        + struct.pack("<L", len(body))
        + bytes(body)
    )


def decode_command(data: bytes | bytearray | memoryview) -> dict[int, CommandValue]:
    """The elements of a command set, by element number (see encode_command)."""
    raw = bytes(data)
    out: dict[int, CommandValue] = {}
    pos, size = 0, len(raw)
    while pos < size:
        if size - pos < 8:
            raise DULProtocolError("command set ends inside an element header")
        group, element, length = _ELEMENT.unpack_from(raw, pos)
        pos += 8
        if group != 0x0000:
            raise DULProtocolError(
                f"command set holds element ({group:04X},{element:04X}) "
                "outside group 0000"
            )
        if length > size - pos:
            raise DULProtocolError(
                f"command element (0000,{element:04X}) of {length} bytes runs past "
                "the end of the command set"
            )
        value = raw[pos : pos + length]
        pos += length
        if element in _US:
            if length != 2:
                raise DULProtocolError(
                    f"command element (0000,{element:04X}) is not US"
                )
            out[element] = int.from_bytes(value, "little")
        elif element in _UL:
            out[element] = int.from_bytes(value, "little") if length == 4 else 0
        elif element in _TEXT:  # UIDs and AE titles: ASCII (PS3.5 6.2)
            try:
                out[element] = value.rstrip(b"\0 ").decode("ascii")
            except UnicodeDecodeError:
                raise DULProtocolError(
                    f"command element (0000,{element:04X}) is not ASCII text"
                ) from None
        else:
            out[element] = value
    if COMMAND_FIELD not in out:
        raise DULProtocolError("command set without a Command Field (0000,0100)")
    return out


def has_dataset(command: Mapping[int, CommandValue]) -> bool:
    """Whether a data set follows the command (CommandDataSetType != 0x0101)."""
    return command.get(COMMAND_DATA_SET_TYPE, NO_DATASET) != NO_DATASET


def command_int(command: Mapping[int, CommandValue], element: int) -> int:
    value = command.get(element, 0)
    return value if isinstance(value, int) else 0


def command_str(command: Mapping[int, CommandValue], element: int) -> str:
    value = command.get(element, "")
    return value if isinstance(value, str) else ""
