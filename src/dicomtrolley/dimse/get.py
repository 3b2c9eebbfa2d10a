"""C-GET (PS3.4 C.4.3): instances come back over the same association.

The association proposes the GET model plus storage contexts with the SCP role
(:mod:`~dicomtrolley.dimse.contexts`); every instance arrives as a C-STORE
request. A :class:`GetSession` runs it on a :class:`~dicomtrolley.dimse.link.Link`
from the worker's own thread: each C-STORE data set is written, fragment by
fragment as it arrives, behind a Part 10 file header into a temporary file in
the spool folder (the output folder, so the final rename stays on one file
system), handed to the :class:`~dicomtrolley.dimse.retrieve.Receiver`
(verified, renamed into place), and answered with the receiver's status.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import IO

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import build_context
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext

from dicomtrolley.dimse.associations import require_context
from dicomtrolley.dimse.contexts import (
    MAX_CONTEXTS,
    UNCOMPRESSED,
    qr_model,
    scp_roles,
    storage_contexts,
)
from dicomtrolley.dimse.errors import DIMSEError, ServiceNotSupportedError
from dicomtrolley.dimse.find import PENDING
from dicomtrolley.dimse.link import Link
from dicomtrolley.dimse.retrieve import (
    STATUS_OUT_OF_RESOURCES,
    Receiver,
    RetrieveUnit,
    Tally,
    check_outcome,
)
from dicomtrolley.dimse.sessions import next_message_id
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.download import DownloadReport, Progress
from dicomtrolley.exceptions import PermanentError, StorageError
from dicomtrolley.formats import dul
from dicomtrolley.formats.part10 import file_header
from dicomtrolley.logs import get_module_logger
from dicomtrolley.storage import make_temp_file

logger = get_module_logger("dimse")

OPERATION = "C-GET"
_COUNTS = {
    "NumberOfRemainingSuboperations": dul.REMAINING,
    "NumberOfCompletedSuboperations": dul.COMPLETED,
    "NumberOfFailedSuboperations": dul.FAILED,
    "NumberOfWarningSuboperations": dul.WARNING,
}


def get_contexts(model: str, sop_classes: Sequence[str]) -> list[PresentationContext]:
    """The GET model context, then storage contexts for sop_classes (<= 128)."""
    model_context = build_context(qr_model(model, "get"), list(UNCOMPRESSED))
    return [model_context, *storage_contexts(sop_classes, MAX_CONTEXTS - 1)]


def require_scp_role(contexts: Sequence[PresentationContext], peer: Peer) -> None:
    """Raise ServiceNotSupportedError when no storage context came with our SCP role."""
    if not any(cx.as_scp for cx in contexts):
        raise ServiceNotSupportedError(
            "the peer accepted no storage context with the SCP role for us, so it "
            "cannot send instances over a C-GET association (try C-MOVE)",
            peer=peer,
            operation=OPERATION,
        )


def _syntax(context: PresentationContext) -> UID:
    return UID(str(context.transfer_syntax[0]))


class _Incoming:
    """One C-STORE data set on its way into a temporary file."""

    def __init__(
        self, command: dict[int, dul.CommandValue], spool: Path, header: bytes
    ) -> None:
        self.command = command
        self.sop_uid = dul.command_str(command, dul.AFFECTED_SOP_INSTANCE_UID)
        self.path: Path | None = None
        self.error: BaseException | None = None
        self._file: IO[bytes] | None = None
        try:
            fd, name = make_temp_file(spool)
            self.path = Path(name)
            self._file = os.fdopen(fd, "wb")
            self._file.write(header)
        except OSError as error:
            self._fail(error)

    def write(self, data: memoryview) -> None:
        if self._file is None:
            return
        try:
            self._file.write(data)
        except OSError as error:
            self._fail(error)

    def finish(self) -> Path:
        """The complete file (raises StorageError when it could not be written)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError as error:
                self._fail(error)
            self._file = None
        if self.error is not None or self.path is None:
            raise StorageError(
                f"cannot write received instance {self.sop_uid}: {self.error}",
                uids=[self.sop_uid],
            )
        return self.path

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self.discard()
        self.path = None


class GetSession:
    """C-GET requests over one association, opened when first needed.

    The interface of :class:`~dicomtrolley.dimse.sessions.RetrieveSession`:
    :meth:`retrieve` one unit, :meth:`close` at the end.
    """

    operation = OPERATION

    def __init__(
        self,
        peer: Peer,
        receiver: Receiver,
        *,
        model: str,
        timeouts: DIMSETimeouts,
        report: DownloadReport,
        progress: Progress,
        contexts: Sequence[PresentationContext],
        spool: Path | None = None,
    ) -> None:
        self.peer = peer
        self.receiver = receiver
        self.model = model
        self.timeouts = timeouts
        self.report = report
        self.progress = progress
        self.contexts = list(contexts)
        self.model_uid = qr_model(model, "get")
        self.spool = spool or Path(tempfile.gettempdir())
        self.link: Link | None = None

    def open(self) -> Link:
        link = Link.connect(
            self.peer,
            self.contexts,
            operation=self.operation,
            timeouts=self.timeouts,
            roles=scp_roles(self.contexts[1:]),
        )
        try:
            accepted = list(link.contexts.values())
            require_context(accepted, self.model_uid, self.peer, self.operation)
            require_scp_role(accepted, self.peer)
        except DIMSEError:
            link.release()
            raise
        return link

    def association(self) -> Link:
        if self.link is None or not self.link.open:
            self.close()
            self.link = self.open()
        return self.link

    def retrieve(self, unit: RetrieveUnit) -> Tally:
        """Fetch unit; missing instances go into the report.

        Raises
        ------
        DIMSEError
            When the request fails as a whole (status, timeout, broken association).
        """
        link = self.association()
        context = link.context_for(self.model_uid)
        assert context is not None  # checked by open()
        syntax = _syntax(context)
        identifier = encode(
            unit.identifier(patient_root=self.model == "patient"),
            syntax.is_implicit_VR,
            syntax.is_little_endian,
        )
        if identifier is None:
            raise PermanentError(f"cannot encode the C-GET identifier for {unit}")
        msg_id = next_message_id()
        command = dul.encode_command(
            {
                dul.AFFECTED_SOP_CLASS_UID: str(self.model_uid),
                dul.COMMAND_FIELD: dul.C_GET_RQ,
                dul.MESSAGE_ID: msg_id,
                dul.PRIORITY: 0,
                dul.COMMAND_DATA_SET_TYPE: 0x0000,
            }
        )
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(
                f"cannot create {self.spool}: {error}", uids=unit.uids()
            ) from error
        tally = Tally(unit)
        deadline = (
            time.monotonic() + self.timeouts.total if self.timeouts.total else None
        )
        logger.debug("%s of %s (message %d)", self.operation, unit, msg_id)
        try:
            link.send(int(context.context_id or 0), command, identifier)
            final, found = _Exchange(self, link, tally, msg_id).run(deadline)
        except DIMSEError as error:
            if not error.uids:
                error.uids = unit.uids()
            raise
        status = Dataset()
        status.Status = dul.command_int(final, dul.STATUS)
        for keyword, element in _COUNTS.items():
            if element in final:
                setattr(status, keyword, dul.command_int(final, element))
        comment = dul.command_str(final, dul.ERROR_COMMENT)
        if comment:
            status.ErrorComment = comment
        check_outcome(
            status,
            found,
            tally,
            peer=self.peer,
            operation=self.operation,
            report=self.report,
        )
        return tally

    def close(self) -> None:
        """Release the association (abort it when the peer does not answer)."""
        link, self.link = self.link, None
        if link is not None:
            link.release()


class _Exchange:
    """The messages of one C-GET: C-STORE requests in, responses out, until the
    final C-GET response."""

    def __init__(self, session: GetSession, link: Link, tally: Tally, msg_id: int):
        self.session = session
        self.link = link
        self.tally = tally
        self.msg_id = msg_id
        self.announced = tally.unit.expected is not None
        self.command = bytearray()
        self.incoming: _Incoming | None = None
        self.incoming_context = 0
        self.final: dict[int, dul.CommandValue] | None = None
        self.identifier = bytearray()
        self.skipping = False  # the data set of a pending response (not expected)
        self.done = False

    def run(
        self, deadline: float | None
    ) -> tuple[dict[int, dul.CommandValue], Dataset | None]:
        session, link = self.session, self.link
        try:
            while not self.done:
                for event in link.receive(deadline, session.receiver.cancelled):
                    if isinstance(event, dul.PDU):
                        raise link.unexpected(event)
                    if event.command:
                        self._command_fragment(event)
                    else:
                        self._data_fragment(event)
        finally:
            if self.incoming is not None:
                self.incoming.discard()
                self.incoming = None
        if not self.announced:
            session.progress.add_total(
                instances=len(self.tally.received) + len(self.tally.failed)
            )
        assert self.final is not None
        found = None
        if self.identifier:
            found = self._decode_identifier()
        return self.final, found

    def _command_fragment(self, event: dul.Fragment) -> None:
        if self.incoming is not None or self.final is not None or self.skipping:
            raise self._protocol("a command arrived before the data set it follows")
        self.command += event.data
        if not event.last:
            return
        try:
            command = dul.decode_command(self.command)
        except dul.DULProtocolError as error:
            raise self._protocol(str(error)) from error
        self.command = bytearray()
        field = dul.command_int(command, dul.COMMAND_FIELD)
        if field == dul.C_STORE_RQ:
            self._start_store(command, event.context_id)
        elif field == dul.C_GET_RSP:
            self._get_response(command)
        else:
            raise self._protocol(f"unexpected DIMSE command 0x{field:04X}")

    def _start_store(
        self, command: dict[int, dul.CommandValue], context_id: int
    ) -> None:
        context = self.link.contexts.get(context_id)
        if context is None or not dul.has_dataset(command):
            raise self._protocol(
                f"C-STORE request on unknown context {context_id} or without data"
            )
        header = file_header(
            dul.command_str(command, dul.AFFECTED_SOP_CLASS_UID),
            dul.command_str(command, dul.AFFECTED_SOP_INSTANCE_UID),
            str(context.transfer_syntax[0]),
            self.session.peer.aec,
        )
        self.incoming = _Incoming(command, self.session.spool, header)
        self.incoming_context = context_id

    def _data_fragment(self, event: dul.Fragment) -> None:
        if self.skipping:
            self.skipping = not event.last
            return
        if self.final is not None:
            self.identifier += event.data
            if event.last:
                self.done = True
            return
        incoming = self.incoming
        if incoming is None or event.context_id != self.incoming_context:
            raise self._protocol("a data set arrived without its command")
        incoming.write(event.data)
        if not event.last:
            return
        self.incoming = None
        receiver = self.session.receiver
        status = receiver.store(incoming.sop_uid, self.tally, incoming.finish)
        logger.debug("C-STORE of %s: status 0x%04X", incoming.sop_uid, status)
        response = dul.encode_command(
            {
                dul.AFFECTED_SOP_CLASS_UID: dul.command_str(
                    incoming.command, dul.AFFECTED_SOP_CLASS_UID
                ),
                dul.COMMAND_FIELD: dul.C_STORE_RSP,
                dul.MESSAGE_ID_BEING_RESPONDED_TO: dul.command_int(
                    incoming.command, dul.MESSAGE_ID
                ),
                dul.COMMAND_DATA_SET_TYPE: dul.NO_DATASET,
                dul.STATUS: status,
                dul.AFFECTED_SOP_INSTANCE_UID: incoming.sop_uid,
            }
        )
        self.link.send(event.context_id, response, None)

    def _get_response(self, command: dict[int, dul.CommandValue]) -> None:
        if dul.command_int(command, dul.MESSAGE_ID_BEING_RESPONDED_TO) != self.msg_id:
            raise self._protocol("a C-GET response to a request we did not send")
        status = dul.command_int(command, dul.STATUS)
        if status in PENDING:
            # PS3.4 C.4.3.1.3.2: no identifier in pending responses; skip one if sent
            self.skipping = dul.has_dataset(command)
            if not self.announced:
                self.session.progress.add_total(
                    instances=sum(
                        dul.command_int(command, element)
                        for element in _COUNTS.values()
                    )
                )
                self.announced = True
            return
        self.final = command
        self.done = not dul.has_dataset(command)

    def _decode_identifier(self) -> Dataset | None:
        context = self.link.context_for(self.session.model_uid)
        syntax = _syntax(context) if context is not None else UID("1.2.840.10008.1.2")
        try:
            return decode(
                BytesIO(bytes(self.identifier)),
                syntax.is_implicit_VR,
                syntax.is_little_endian,
            )
        except Exception:  # the counts still tell what went wrong
            logger.warning("cannot decode the identifier of the final C-GET response")
            return None

    def _protocol(self, message: str) -> DIMSEError:
        return self.link.fail(f"protocol error: {message}")


__all__ = [
    "STATUS_OUT_OF_RESOURCES",
    "GetSession",
    "get_contexts",
    "require_scp_role",
]
