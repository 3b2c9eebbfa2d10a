"""DIMSE messages over a :class:`~dicomtrolley.dimse.link.Link`: whole command
sets and data sets out of P-DATA fragments, and identifiers as bytes.

A DIMSE message (PS3.7 6.3, PS3.8 9.3.5) is a command set, sent as one or more
command fragments, then, when its Command Data Set Type says so, a data set in
data fragments, all on one presentation context. :class:`MessageReader` puts
the fragments that :meth:`Link.receive <dicomtrolley.dimse.link.Link.receive>`
hands over back together, one message at a time; anything else the peer sends
(an A-ABORT, an A-RELEASE-RQ, a fragment on another context) ends the
association with the matching error. Identifiers (C-FIND keys and matches) go
through pydicom in the transfer syntax of their context.
"""

from __future__ import annotations

from collections import deque
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from dicomtrolley.dimse.link import Link
from dicomtrolley.exceptions import PermanentError
from dicomtrolley.formats import dul

Command = dict[int, dul.CommandValue]


class MessageReader:
    """The DIMSE messages the peer sends on one presentation context.

    ``deadline`` (``time.monotonic()``, None: none) bounds every wait; it may be
    moved between messages (shortened for the answer to a C-CANCEL, say).
    """

    def __init__(
        self, link: Link, context_id: int, deadline: float | None = None
    ) -> None:
        self.link = link
        self.context_id = context_id
        self.deadline = deadline
        self._events: deque[dul.Event] = deque()

    def next(self) -> tuple[Command, bytes | None]:
        """The next message: its command set and its data set (None: none).

        Raises
        ------
        DIMSETimeoutError, AssociationAbortedError
            As :meth:`Link.receive <dicomtrolley.dimse.link.Link.receive>`,
            and for anything that is not the next piece of a message on our
            context (the association is aborted).
        """
        link = self.link
        command = bytearray()
        decoded: Command | None = None
        data = bytearray()
        while True:
            if not self._events:
                self._events.extend(link.receive(self.deadline))
                continue
            event = self._events.popleft()
            if isinstance(event, dul.PDU):
                raise link.unexpected(event)
            if event.context_id != self.context_id:
                raise link.fail(
                    "protocol error: a message on presentation context "
                    f"{event.context_id}, not {self.context_id}"
                )
            if decoded is None:
                if not event.command:
                    raise link.fail("protocol error: a data set without its command")
                command += event.data
                if not event.last:
                    continue
                try:
                    decoded = dul.decode_command(command)
                except dul.DULProtocolError as error:
                    raise link.fail(f"protocol error: {error}") from error
                if not dul.has_dataset(decoded):
                    return decoded, None
                continue
            if event.command:
                raise link.fail(
                    "protocol error: a command arrived before the data set it follows"
                )
            data += event.data
            if event.last:
                return decoded, bytes(data)


def transfer_syntax(link: Link, context_id: int) -> UID:
    """The transfer syntax accepted for a context of link."""
    return UID(link.contexts[context_id].transfer_syntax)


def encode_identifier(dataset: Dataset, syntax: UID) -> bytes:
    """dataset as the data set of a DIMSE message in syntax.

    Raises PermanentError when pydicom cannot encode it (a value that does not
    fit its VR, for example).
    """
    buffer = DicomBytesIO()
    buffer.is_little_endian = syntax.is_little_endian
    buffer.is_implicit_VR = syntax.is_implicit_VR
    try:
        write_dataset(buffer, dataset)
    except Exception as error:  # pydicom raises assorted errors on bad values
        raise PermanentError(f"cannot encode the identifier: {error}") from error
    return buffer.getvalue()


def read_identifier(data: bytes, syntax: UID) -> Dataset:
    """The data set of a message, every element decoded (pydicom would decode
    them on access, and raise its errors to whoever looks first).

    Raises PermanentError when the bytes are not a data set in syntax.
    """
    try:
        dataset = read_dataset(
            BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian
        )
        for _ in dataset:  # iterating converts the raw elements
            pass
    except Exception as error:  # pydicom raises assorted errors on garbage
        raise PermanentError(f"undecodable identifier ({error})") from error
    return dataset


def decode_identifier(data: bytes, syntax: UID, link: Link) -> Dataset:
    """:func:`read_identifier`, aborting the association (and raising
    AssociationAbortedError) when the bytes are not a data set in syntax."""
    try:
        return read_identifier(data, syntax)
    except PermanentError as error:
        raise link.fail(f"protocol error: {error}") from error


__all__ = [
    "Command",
    "MessageReader",
    "decode_identifier",
    "encode_identifier",
    "read_identifier",
    "transfer_syntax",
]
