"""A scripted DICOM peer on loopback, for tests of dicomtrolley's DIMSE client.

:class:`Peer` listens on 127.0.0.1 and a free port and accepts one association
per script it was given, one after the other: each A-ASSOCIATE-RQ is accepted
with every proposed context (its first transfer syntax) and the SCP role asked
for, then the socket is handed to the script, which reads requests and writes
answers byte by byte (:meth:`Peer.message`, :meth:`Peer.store`,
:meth:`Peer.get_response` ...). After the last script the port is closed, so
one more association than scripted is refused. :func:`instance` makes the small
CT data sets the peer sends.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext

from dicomtrolley.formats import dul

STUDY = "1.2.826.0.1.3680043.8.498.77"
SERIES = STUDY + ".1"
GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"
FIND_MODEL = "1.2.840.10008.5.1.4.1.2.2.1"
C_FIND_RSP = 0x8020


def instance(sop_uid: str) -> bytes:
    """A small CT data set in Explicit VR Little Endian."""
    dataset = Dataset()
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = sop_uid
    dataset.StudyInstanceUID = STUDY
    dataset.SeriesInstanceUID = SERIES
    dataset.PatientName = "Link^Test"
    dataset.BitsAllocated = 8
    dataset.PixelData = bytes(range(256)) * 4
    encoded = encode(dataset, False, True)
    assert encoded is not None
    return encoded


Script = Callable[["Peer"], None]


class Peer:
    """Scripted associations, one per script, in order (see the module docstring)."""

    def __init__(self, *scripts: Script, max_pdu: int = 16384) -> None:
        self.scripts = scripts
        self.max_pdu = max_pdu
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.reader = dul.PDUReader()
        self.pending: list[dul.Event] = []
        self.seen: list[dul.Event] = []
        self.contexts: dict[str, int] = {}  # abstract syntax -> context id
        self.associations = 0  # accepted so far
        self.error: BaseException | None = None
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.server.settimeout(10)
            for script in self.scripts:
                conn, _ = self.server.accept()
                conn.settimeout(10)
                self.conn = conn
                self.reader = dul.PDUReader()
                self.pending, self.seen, self.contexts = [], [], {}
                try:
                    [rq] = self.next(1)
                    assert isinstance(rq, dul.PDU) and rq.type == dul.A_ASSOCIATE_RQ
                    conn.sendall(self._accept(rq.raw))
                    self.associations += 1
                    script(self)
                finally:
                    conn.close()
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            self.server.close()

    def _accept(self, raw: bytes) -> bytes:
        request = A_ASSOCIATE_RQ()
        request.decode(raw)
        asked = request.to_primitive()
        answer = A_ASSOCIATE()
        answer.application_context_name = asked.application_context_name
        answer.calling_ae_title = asked.calling_ae_title
        answer.called_ae_title = asked.called_ae_title
        answer.result = 0
        results = []
        for proposed in asked.presentation_context_definition_list:
            context = PresentationContext()
            context.context_id = proposed.context_id
            context.abstract_syntax = proposed.abstract_syntax
            context.transfer_syntax = [proposed.transfer_syntax[0]]
            context.result = 0
            results.append(context)
            self.contexts.setdefault(
                str(proposed.abstract_syntax), int(proposed.context_id or 0)
            )
        maximum = MaximumLengthNotification()
        maximum.maximum_length_received = self.max_pdu
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = "1.2.3.4"
        roles = []
        for item in asked.user_information:
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation):
                role = SCP_SCU_RoleSelectionNegotiation()
                role.sop_class_uid = item.sop_class_uid
                role.scu_role = False
                role.scp_role = True
                roles.append(role)
        answer.user_information = [maximum, implementation, *roles]
        answer.presentation_context_definition_results_list = results
        pdu = A_ASSOCIATE_AC()
        pdu.from_primitive(answer)
        return bytes(pdu.encode())

    def next(self, count: int) -> list[dul.Event]:
        """The next count events from the requestor."""
        assert self.conn is not None
        while len(self.pending) < count:
            data = self.conn.recv(65536)
            if not data:
                raise ConnectionError("requestor closed the connection")
            self.pending += self.reader.feed(data)
        events, self.pending = self.pending[:count], self.pending[count:]
        self.seen += events
        return events

    def message(self) -> tuple[dict[int, dul.CommandValue], bytes | None]:
        """The next DIMSE message: command set and data set (if any)."""
        command = b""
        while True:
            [event] = self.next(1)
            assert isinstance(event, dul.Fragment) and event.command
            command += bytes(event.data)
            if event.last:
                break
        decoded = dul.decode_command(command)
        if not dul.has_dataset(decoded):
            return decoded, None
        data = b""
        while True:
            [event] = self.next(1)
            assert isinstance(event, dul.Fragment) and not event.command
            data += bytes(event.data)
            if event.last:
                return decoded, data

    def send(self, raw: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(raw)

    def send_message(
        self,
        abstract_syntax: str,
        command: dict[int, dul.CommandValue],
        data: bytes = b"",
    ) -> None:
        context_id = self.contexts[abstract_syntax]
        if data:
            command = {**command, dul.COMMAND_DATA_SET_TYPE: 0x0000}
        else:
            command = {**command, dul.COMMAND_DATA_SET_TYPE: dul.NO_DATASET}
        raw = b"".join(
            dul.p_data(
                context_id, dul.encode_command(command), command=True, max_length=0
            )
        )
        if data:
            raw += b"".join(dul.p_data(context_id, data, command=False, max_length=64))
        self.send(raw)

    def store(self, sop_uid: str, data: bytes, message_id: int = 9) -> None:
        self.send_message(
            CTImageStorage,
            {
                dul.AFFECTED_SOP_CLASS_UID: CTImageStorage,
                dul.COMMAND_FIELD: dul.C_STORE_RQ,
                dul.MESSAGE_ID: message_id,
                dul.PRIORITY: 0,
                dul.AFFECTED_SOP_INSTANCE_UID: sop_uid,
            },
            data,
        )

    def get_response(self, request_id: int, status: int, **counts: int) -> None:
        command: dict[int, dul.CommandValue] = {
            dul.AFFECTED_SOP_CLASS_UID: GET_MODEL,
            dul.COMMAND_FIELD: dul.C_GET_RSP,
            dul.MESSAGE_ID_BEING_RESPONDED_TO: request_id,
            dul.STATUS: status,
        }
        names = {
            "remaining": dul.REMAINING,
            "completed": dul.COMPLETED,
            "failed": dul.FAILED,
            "warning": dul.WARNING,
        }
        for name, value in counts.items():
            command[names[name]] = value
        self.send_message(GET_MODEL, command)

    def find_response(self, request_id: int, status: int) -> None:
        """A final C-FIND response without identifier."""
        self.send_message(
            FIND_MODEL,
            {
                dul.AFFECTED_SOP_CLASS_UID: FIND_MODEL,
                dul.COMMAND_FIELD: C_FIND_RSP,
                dul.MESSAGE_ID_BEING_RESPONDED_TO: request_id,
                dul.STATUS: status,
            },
        )

    def finish_release(self) -> None:
        """Answer the requestor's A-RELEASE-RQ."""
        [event] = self.next(1)
        assert isinstance(event, dul.PDU) and event.type == dul.A_RELEASE_RQ
        self.send(dul.release_rp())

    def join(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
