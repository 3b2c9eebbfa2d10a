"""Associations reused for many C-GET or C-MOVE requests, one per worker thread.

Opening an association with a hundred presentation contexts costs tens of
milliseconds; a study of many series, or many studies, would pay it for every
request. A :class:`RetrieveSession` keeps its :class:`~dicomtrolley.dimse.
link.Link` open between requests (PS3.7 allows any number of operations on one
association) and opens a new one only when the last one broke. A
:class:`SessionPool` gives each worker thread its own session and closes them
all at the end.

C-GET and C-MOVE differ only in what the request carries and where the
instances arrive; :class:`RetrieveSession` runs the request, reads the pending
and final responses (PS3.4 C.4.2.1.5, C.4.3.1.5) with :class:`_Exchange`, and
checks what arrived against the final counts. Its subclasses
(:class:`~dicomtrolley.dimse.get.GetSession`, :class:`~dicomtrolley.dimse.move.
MoveSession`) say which contexts to propose, what goes into the command, and,
for C-GET, take the C-STORE requests that come on the same association.

Stopping: the caller's ``cancelled()`` is looked at between socket reads (at
least every :data:`~dicomtrolley.dimse.link.SLICE` seconds) and aborts the
association; so does any exception in the caller's thread, Ctrl-C included.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Protocol

from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicomtrolley.dimse.contexts import Proposal, require_context
from dicomtrolley.dimse.errors import DIMSEError, DIMSEStatusError
from dicomtrolley.dimse.incoming import Command, CommandAssembler, StoreIntake
from dicomtrolley.dimse.link import Heard, Link
from dicomtrolley.dimse.messages import encode_identifier, read_identifier
from dicomtrolley.dimse.retrieve import Receiver, RetrieveUnit, Tally, check_outcome
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.download import DownloadReport, Progress
from dicomtrolley.exceptions import PermanentError, StorageError
from dicomtrolley.formats import dimse_commands, dul
from dicomtrolley.formats.association import RoleSelection
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("dimse")


_message_ids = itertools.cycle(range(1, 65536))
_message_ids_lock = threading.Lock()

#: Sub-operation counts of a C-GET/C-MOVE response, by Dataset keyword
COUNTS = {
    "NumberOfRemainingSuboperations": dul.REMAINING,
    "NumberOfCompletedSuboperations": dul.COMPLETED,
    "NumberOfFailedSuboperations": dul.FAILED,
    "NumberOfWarningSuboperations": dul.WARNING,
}


def next_message_id() -> int:
    """A message ID that no other request of this process is using right now."""
    with _message_ids_lock:
        return next(_message_ids)


class RetrieveSession:
    """One association for successive C-GET or C-MOVE requests.

    Subclasses set ``operation`` and the response command field, say what the
    request command is (:meth:`command`), and may override :meth:`contexts`, :meth:`roles`,
    :meth:`check`, :meth:`command`, :meth:`intake`, :meth:`heard` and
    :meth:`hint`.
    """

    operation = ""
    response_field = 0

    def __init__(
        self,
        peer: Peer,
        receiver: Receiver,
        *,
        model: str,
        timeouts: DIMSETimeouts,
        report: DownloadReport,
        progress: Progress,
        model_uid: str,
        spool: Path | None = None,
    ) -> None:
        self.peer = peer
        self.receiver = receiver
        self.model = model
        self.model_uid = model_uid
        self.timeouts = timeouts
        self.report = report
        self.progress = progress
        self.spool = spool
        self.link: Link | None = None

    # -- what subclasses say ------------------------------------------------------

    def contexts(self) -> list[Proposal]:
        raise NotImplementedError()

    def roles(self) -> list[RoleSelection]:
        return []

    def check(self, link: Link) -> None:
        """Raise when the accepted contexts cannot serve the request."""

    def command(self, msg_id: int) -> bytes:
        """The encoded request command (the identifier follows it)."""
        raise NotImplementedError()

    def intake(self, link: Link, tally: Tally) -> StoreIntake | None:
        """Who takes C-STORE requests on our own association (None: nobody)."""
        return None

    def heard(self) -> Heard | None:
        """Signs of life of the peer outside our association (Link.receive)."""
        return None

    def hint(self, status: int) -> str:
        """Advice to add to a failure status ('' for none)."""
        return ""

    # -- the association ----------------------------------------------------------

    def open(self) -> Link:
        link = Link.connect(
            self.peer,
            self.contexts(),
            operation=self.operation,
            timeouts=self.timeouts,
            roles=self.roles(),
            cancelled=self.receiver.cancelled,
        )
        try:
            accepted = list(link.contexts.values())
            require_context(accepted, self.model_uid, self.peer, self.operation)
            self.check(link)
        except DIMSEError:
            link.release()
            raise
        return link

    def association(self) -> Link:
        if self.link is None or not self.link.open:
            self.close()
            self.link = self.open()
        return self.link

    def close(self) -> None:
        """Release the association (abort it when the peer does not answer)."""
        link, self.link = self.link, None
        if link is not None:
            link.release()

    # -- one request --------------------------------------------------------------

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
        try:
            identifier = encode_identifier(
                unit.identifier(patient_root=self.model == "patient"),
                UID(context.transfer_syntax),
            )
        except PermanentError as error:
            raise PermanentError(
                f"cannot encode the {self.operation} identifier for {unit}: {error}",
                uids=unit.uids(),
            ) from error
        if self.spool is not None:
            try:
                self.spool.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StorageError(
                    f"cannot create {self.spool}: {error}", uids=unit.uids()
                ) from error
        msg_id = next_message_id()
        tally = Tally(unit)
        deadline = (
            time.monotonic() + self.timeouts.total if self.timeouts.total else None
        )
        logger.debug("%s of %s (message %d)", self.operation, unit, msg_id)
        self.receiver.register(msg_id, tally)
        try:
            link.send(context.context_id, self.command(msg_id), identifier)
            final, found = _Exchange(self, link, tally, msg_id).run(deadline)
        except DIMSEError as error:
            if not error.uids:
                error.uids = unit.uids()
            raise
        except BaseException:  # Ctrl-C, a bug: the peer must not wait for us
            link.abort()
            raise
        finally:
            self.receiver.unregister(msg_id)
        check_outcome(
            _status_dataset(final),
            found,
            tally,
            peer=self.peer,
            operation=self.operation,
            report=self.report,
            hint=self.hint(dul.command_int(final, dul.STATUS)),
        )
        return tally


def _status_dataset(final: Command) -> Dataset:
    """The status elements of a final response, as check_outcome reads them."""
    status = Dataset()
    status.Status = dul.command_int(final, dul.STATUS)
    for keyword, element in COUNTS.items():
        if element in final:
            setattr(status, keyword, dul.command_int(final, element))
    comment = dul.command_str(final, dul.ERROR_COMMENT)
    if comment:
        status.ErrorComment = comment
    return status


class _Exchange:
    """The messages of one C-GET or C-MOVE: pending responses (and, for C-GET,
    C-STORE requests answered as they come) until the final response."""

    def __init__(
        self, session: RetrieveSession, link: Link, tally: Tally, msg_id: int
    ) -> None:
        self.session = session
        self.link = link
        self.tally = tally
        self.msg_id = msg_id
        self.intake = session.intake(link, tally)
        self.announced = tally.unit.expected is not None
        self.commands = CommandAssembler()
        self.final: Command | None = None
        self.identifier = bytearray()
        self.skipping = False  # the data set of a pending response (not expected)
        self.done = False

    def run(self, deadline: float | None) -> tuple[Command, Dataset | None]:
        link, session = self.link, self.session
        heard = session.heard()
        cancelled = session.receiver.cancelled
        try:
            while not self.done:
                for event in link.receive(deadline, cancelled, heard):
                    if isinstance(event, dul.PDU):
                        raise link.unexpected(event)
                    if event.command:
                        self._command(event)
                    else:
                        self._data(event)
        finally:
            if self.intake is not None:
                self.intake.discard()
        if not self.announced:
            session.progress.add_total(
                instances=len(self.tally.received) + len(self.tally.failed)
            )
        assert self.final is not None
        return self.final, self._decode_identifier() if self.identifier else None

    def _command(self, fragment: dul.Fragment) -> None:
        if self.final is not None or self.skipping:
            raise self._protocol("a command arrived before the data set it follows")
        if self.intake is not None and self.intake.busy:
            raise self._protocol("a command arrived before the data set it follows")
        try:
            command = self.commands.feed(fragment)
        except dul.DULProtocolError as error:
            raise self._protocol(str(error)) from error
        if command is None:
            return
        field = dul.command_int(command, dul.COMMAND_FIELD)
        if field == dul.C_STORE_RQ and self.intake is not None:
            self.intake.start(command, fragment.context_id)
        elif field == self.session.response_field:
            self._response(command)
        else:
            raise self._protocol(f"unexpected DIMSE command 0x{field:04X}")

    def _data(self, fragment: dul.Fragment) -> None:
        if self.skipping:
            self.skipping = not fragment.last
            return
        if self.final is not None:
            self.identifier += fragment.data
            if fragment.last:
                self.done = True
            return
        if self.intake is None:
            raise self._protocol("a data set arrived without its command")
        self.intake.data(fragment)

    def _response(self, command: Command) -> None:
        if dul.command_int(command, dul.MESSAGE_ID_BEING_RESPONDED_TO) != self.msg_id:
            raise self._protocol(
                f"a {self.session.operation} response to a request we did not send"
            )
        status = dul.command_int(command, dul.STATUS)
        if dimse_commands.is_pending(status):
            # PS3.4 C.4.2.1.5: no identifier in pending responses; skip one if sent
            self.skipping = dul.has_dataset(command)
            if not self.announced:
                self.session.progress.add_total(
                    instances=sum(
                        dul.command_int(command, element) for element in COUNTS.values()
                    )
                )
                self.announced = True
            return
        self.final = command
        self.done = not dul.has_dataset(command)

    def _decode_identifier(self) -> Dataset | None:
        context = self.link.context_for(self.session.model_uid)
        assert context is not None  # the request went on it
        try:
            return read_identifier(bytes(self.identifier), UID(context.transfer_syntax))
        except PermanentError:  # the counts still tell what went wrong
            logger.warning(
                "cannot decode the identifier of the final %s response",
                self.session.operation,
            )
            return None

    def _protocol(self, message: str) -> DIMSEError:
        return self.link.fail(f"protocol error: {message}")


class Session(Protocol):
    """What a SessionPool needs of a session."""

    report: DownloadReport

    def retrieve(self, unit: RetrieveUnit) -> Tally: ...

    def close(self) -> None: ...


class SessionPool:
    """A session per worker thread, made by factory when first needed."""

    def __init__(self, factory: Callable[[], Session]) -> None:
        self.factory = factory
        self._local = threading.local()
        self._sessions: list[Session] = []
        self._lock = threading.Lock()

    def session(self) -> Session:
        session: Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self.factory()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def retrieve(self, unit: RetrieveUnit) -> None:
        """Fetch unit with this thread's session (for run_transfers).

        Some archives (Orthanc) fail a list of instance UIDs as a whole when one
        of them is unknown; such a list is then asked for instance by instance,
        so that the report names exactly the ones that are missing.
        """
        session = self.session()
        try:
            session.retrieve(unit)
        except DIMSEStatusError:
            if len(unit.instance_uids) < 2:
                raise
            logger.info("%s failed as a whole; asking for each instance", unit)
            for single in unit.split():
                try:
                    session.retrieve(single)
                except DIMSEStatusError as error:
                    session.report.add_failure(str(single), error)

    def reset(self) -> None:
        """End this thread's association: its next request opens a new one."""
        session: Session | None = getattr(self._local, "session", None)
        if session is None:
            return
        try:
            session.close()
        except DIMSEError:
            logger.debug("closing %s failed", session, exc_info=True)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            try:
                session.close()
            except DIMSEError:
                logger.debug("closing %s failed", session, exc_info=True)

    def __enter__(self) -> SessionPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def run_stoppable(
    work: Callable[[], None], stop: threading.Event, workers: int
) -> None:
    """Run work; Ctrl-C (or any exception here) sets stop and waits for it to end.

    With one worker, work runs in this thread: the exception reaches the
    socket wait at once. With several, their threads do not see Ctrl-C, so
    work runs in a thread of its own while this one waits; stop then tells
    every transfer to abort, which each does at its next look (SLICE seconds).
    """
    if workers <= 1:
        work()
        return
    failure: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            work()
        except BaseException as error:  # handed over to the caller's thread
            failure.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=run, name="dicomtrolley-transfers", daemon=True)
    thread.start()
    try:  # an Event, not Thread.join: an interrupted join may not wait again
        while not done.wait(0.1):
            pass
    except BaseException:
        stop.set()
        while not done.wait(0.1):
            pass
        raise
    if failure:
        raise failure[0]


__all__ = [
    "RetrieveSession",
    "Session",
    "SessionPool",
    "next_message_id",
    "run_stoppable",
]
