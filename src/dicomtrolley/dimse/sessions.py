"""Associations reused for many C-GET or C-MOVE requests, one per worker thread.

Opening an association with a hundred presentation contexts costs tens of
milliseconds; a study of many series, or many studies, would pay it for every
request. A :class:`RetrieveSession` keeps its association open between
requests (PS3.7 allows any number of operations on one association) and opens
a new one only when the last one broke. A :class:`SessionPool` gives each
worker thread its own session and closes them all at the end.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Protocol

from pydicom.dataset import Dataset
from pynetdicom.association import Association

from dicomtrolley.dimse.associations import (
    Watchdog,
    ended_before_sending,
    release,
)
from dicomtrolley.dimse.errors import DIMSEError, DIMSEStatusError
from dicomtrolley.dimse.find import PENDING
from dicomtrolley.dimse.retrieve import Receiver, RetrieveUnit, Tally, check_outcome
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.download import DownloadReport, Progress
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("dimse")

_message_ids = itertools.cycle(range(1, 65536))
_message_ids_lock = threading.Lock()

Responses = Iterator[tuple[Dataset, Dataset | None]]


def next_message_id() -> int:
    """A message ID that no other request of this process is using right now."""
    with _message_ids_lock:
        return next(_message_ids)


def sub_operations(status: Dataset) -> int:
    """Remaining + completed + failed + warning sub-operations of a response."""
    return sum(
        int(status.get(name, 0) or 0)
        for name in (
            "NumberOfRemainingSuboperations",
            "NumberOfCompletedSuboperations",
            "NumberOfFailedSuboperations",
            "NumberOfWarningSuboperations",
        )
    )


class RetrieveSession:
    """One association for successive C-GET or C-MOVE requests.

    Subclasses say how to open the association (:meth:`open`), how to send one
    request (:meth:`send`) and what else shows the transfer is alive.
    """

    operation = ""

    def __init__(
        self,
        peer: Peer,
        receiver: Receiver,
        *,
        model: str,
        timeouts: DIMSETimeouts,
        report: DownloadReport,
        progress: Progress,
    ) -> None:
        self.peer = peer
        self.receiver = receiver
        self.model = model
        self.timeouts = timeouts
        self.report = report
        self.progress = progress
        self.assoc: Association | None = None
        #: the request whose instances arrive now (C-GET)
        self.current: Tally | None = None

    def open(self) -> Association:
        raise NotImplementedError()

    def send(self, assoc: Association, unit: RetrieveUnit, msg_id: int) -> Responses:
        raise NotImplementedError()

    def alive(self) -> list[Callable[[], bool]]:
        return [self.receiver.busy]

    def hint(self, status: int, assoc: Association) -> str:
        """Advice to add to a failure status ('' for none)."""
        return ""

    def association(self) -> Association:
        if self.assoc is None or not self.assoc.is_established:
            self.close()
            self.assoc = self.open()
        return self.assoc

    def retrieve(self, unit: RetrieveUnit) -> Tally:
        """Fetch unit; missing instances go into the report.

        Raises
        ------
        DIMSEError
            When the request fails as a whole (status, timeout, broken association).
        """
        assoc = self.association()
        tally = Tally(unit)
        self.current = tally
        msg_id = next_message_id()
        self.receiver.register(msg_id, tally)
        final: Dataset | None = None
        identifier: Dataset | None = None
        announced = unit.expected is not None
        try:
            with (
                Watchdog(
                    assoc,
                    self.timeouts,
                    alive=self.alive(),
                    cancelled=self.receiver.cancelled,
                ) as watchdog,
                ended_before_sending(assoc),
            ):
                for status, match in self.send(assoc, unit, msg_id):
                    code = status.get("Status")
                    if code is None:
                        break
                    if code in PENDING:
                        if not announced:
                            self.progress.add_total(instances=sub_operations(status))
                            announced = True
                        continue
                    final, identifier = status, match
                    break
            if final is None:
                self.close()
                raise watchdog.error(self.peer, self.operation, uids=unit.uids())
        finally:
            self.receiver.unregister(msg_id)
            self.current = None
        if not announced:
            self.progress.add_total(instances=len(tally.received) + len(tally.failed))
        check_outcome(
            final,
            identifier,
            tally,
            peer=self.peer,
            operation=self.operation,
            report=self.report,
            hint=self.hint(int(final.Status), assoc),
        )
        return tally

    def close(self) -> None:
        """Release the association (abort it when the peer does not answer)."""
        assoc, self.assoc = self.assoc, None
        if assoc is not None:
            release(assoc)


class Session(Protocol):
    """What a SessionPool needs of a session (RetrieveSession, GetSession)."""

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
