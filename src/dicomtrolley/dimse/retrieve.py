"""What C-GET and C-MOVE share: what to ask for, where instances go, what is missing.

* :class:`RetrieveUnit` is one C-GET or C-MOVE request: a study, a series, or a
  list of instances of one series (PS3.4 C.4.2.2.1: several UIDs in one unique
  key, "list of UID matching"). :func:`plan_units` makes them from what the
  user asked for.
* :class:`Receiver` takes every received instance, of C-GET and C-MOVE alike:
  :class:`~dicomtrolley.dimse.incoming.StoreIntake` has written the incoming
  data set to a temporary file (:class:`Received`: with what was checked of
  its bytes on the way); the receiver hands that file to the sink (for disk:
  the storage writer takes it over, verified, indexed, renamed into place), so
  no data set is ever held in memory whole on its way to disk, nor read back.
* :func:`check_outcome` compares what arrived with what the PACS reported in
  its final response (completed, failed and warning sub-operations, PS3.4
  C.4.2.1.5 / C.4.3.1.5) and reports every instance that did not arrive.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from dicomtrolley.core import (
    DICOMDownloadable,
    Instance,
    InstanceReference,
    Series,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.dimse.errors import (
    SubOperationError,
    describe_status,
    status_error,
)
from dicomtrolley.dimse.find import IMAGE, SERIES, STUDY
from dicomtrolley.dimse.settings import Peer
from dicomtrolley.download import DownloadReport, Progress
from dicomtrolley.exceptions import (
    DICOMParseError,
    DICOMTrolleyError,
    PermanentError,
    StorageError,
)
from dicomtrolley.logs import get_module_logger
from dicomtrolley.storage import DICOMDiskStorage, InstanceWriter, StreamCheck

logger = get_module_logger("dimse")

#: At most this many SOP Instance UIDs in one request (list of UID matching).
MAX_UIDS_PER_REQUEST = 200
COPY_CHUNK = 1 << 20

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # C-STORE: refused, out of resources
STATUS_CANNOT_UNDERSTAND = 0xC000  # C-STORE: error, cannot understand


@dataclass(frozen=True)
class RetrieveUnit:
    """One C-GET/C-MOVE request and what the search knew about its contents."""

    level: str
    study_uid: str
    series_uid: str = ""
    instance_uids: tuple[str, ...] = ()
    #: the instances, when the search went that deep (None: unknown)
    expected: tuple[InstanceReference, ...] | None = None
    patient_id: str = ""

    def identifier(self, patient_root: bool = False) -> Dataset:
        """The C-GET/C-MOVE identifier (unique keys only, PS3.4 C.4.2.2.1)."""
        dataset = Dataset()
        dataset.QueryRetrieveLevel = self.level
        if patient_root:
            dataset.PatientID = self.patient_id
        dataset.StudyInstanceUID = self.study_uid
        if self.level in (SERIES, IMAGE):
            dataset.SeriesInstanceUID = self.series_uid
        if self.level == IMAGE:
            dataset.SOPInstanceUID = list(self.instance_uids)
        return dataset

    def uids(self) -> tuple[str, ...]:
        return tuple(u for u in (self.study_uid, self.series_uid) if u) + tuple(
            self.instance_uids
        )

    def split(self) -> list[RetrieveUnit]:
        """One IMAGE-level unit per instance of this list."""
        known = {ref.instance_uid: ref for ref in self.expected or ()}
        return [
            RetrieveUnit(
                IMAGE,
                self.study_uid,
                self.series_uid,
                (uid,),
                (known[uid],) if uid in known else None,
                self.patient_id,
            )
            for uid in self.instance_uids
        ]

    def reference(self, sop_uid: str) -> InstanceReference:
        return InstanceReference(self.study_uid, self.series_uid, sop_uid)

    def __str__(self) -> str:
        if self.level == STUDY:
            return f"study {self.study_uid}"
        if self.level == SERIES:
            return f"series {self.series_uid} of study {self.study_uid}"
        count = len(self.instance_uids)
        return (
            f"{count} instance{'s' if count != 1 else ''} of series {self.series_uid}"
        )


def _patient_id(obj: DICOMDownloadable) -> str:
    data = None
    if isinstance(obj, Study | Series | Instance):
        data = obj.root().data
    value = data.get("PatientID") if data is not None else None
    return str(value) if value else ""


def plan_units(
    objects: Sequence[DICOMDownloadable],
    *,
    present: Callable[[InstanceReference], bool] = lambda ref: False,
) -> list[RetrieveUnit]:
    """The requests that fetch objects, skipping instances ``present`` on disk.

    Studies found with their series become one unit per series (only those
    series: a series-level search may have found some of them), so that
    several associations can share the work. Instances are grouped per series
    into IMAGE-level requests of at most MAX_UIDS_PER_REQUEST UIDs. A series or
    study whose instances are known and partly present asks only for the rest.
    """
    units: list[RetrieveUnit] = []
    loose: dict[tuple[str, str], list[InstanceReference]] = defaultdict(list)
    patients: dict[tuple[str, str], str] = {}

    def add_known(
        level: str, study: str, series: str, refs: list[InstanceReference], pid: str
    ) -> None:
        missing = [ref for ref in refs if not present(ref)]
        if len(missing) == len(refs):
            units.append(RetrieveUnit(level, study, series, (), tuple(refs), pid))
        else:
            loose[(study, series)].extend(missing)
            patients[(study, series)] = pid

    for obj in objects:
        pid = _patient_id(obj)
        if isinstance(obj, Study) and obj.series:
            for series in obj.series:
                refs = [i.reference() for i in series.instances]
                if refs:
                    add_known(SERIES, obj.uid, series.uid, refs, pid)
                else:
                    units.append(
                        RetrieveUnit(SERIES, obj.uid, series.uid, patient_id=pid)
                    )
        elif isinstance(obj, Series):
            refs = [i.reference() for i in obj.instances]
            if refs:
                add_known(SERIES, obj.parent.uid, obj.uid, refs, pid)
            else:
                units.append(
                    RetrieveUnit(SERIES, obj.parent.uid, obj.uid, patient_id=pid)
                )
        elif isinstance(obj, Study | StudyReference):
            study_uid = obj.uid if isinstance(obj, Study) else obj.study_uid
            units.append(RetrieveUnit(STUDY, study_uid, patient_id=pid))
        elif isinstance(obj, SeriesReference):
            units.append(RetrieveUnit(SERIES, obj.study_uid, obj.series_uid))
        else:
            ref = obj.reference()
            if not isinstance(ref, InstanceReference):
                raise PermanentError(f"cannot retrieve {obj}: unknown kind of object")
            if not present(ref):
                loose[(ref.study_uid, ref.series_uid)].append(ref)
                patients[(ref.study_uid, ref.series_uid)] = pid
    for (study, series_uid), refs in loose.items():
        unique = list(dict.fromkeys(refs))
        for start in range(0, len(unique), MAX_UIDS_PER_REQUEST):
            chunk = tuple(unique[start : start + MAX_UIDS_PER_REQUEST])
            units.append(
                RetrieveUnit(
                    IMAGE,
                    study,
                    series_uid,
                    tuple(ref.instance_uid for ref in chunk),
                    chunk,
                    patients.get((study, series_uid), ""),
                )
            )
    return list(dict.fromkeys(units))


@dataclass
class Tally:
    """What arrived for one request: saved, and refused by us (with why)."""

    unit: RetrieveUnit
    received: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Received:
    """A complete received instance in a temporary file.

    ``check``: what was seen of its bytes as they were written (CRC-32 and
    the walk of its data set, :class:`~dicomtrolley.storage.StreamCheck`),
    so that the storage need not read the file again; None when not known.
    """

    path: Path
    check: StreamCheck | None = None


Sink = Callable[[Received, str, "Tally"], int]
"""Takes a received temporary file: (received, SOP Instance UID, tally) -> bytes
kept.

The sink owns the file afterwards (moves or deletes it). Raises a
DICOMTrolleyError when it cannot keep it."""


class Receiver:
    """Where every received instance goes: :meth:`store` puts it into the sink.

    Routing: a C-GET passes the tally of its current request; the C-MOVE
    storage SCP finds it with :meth:`tally_for`, by the Move Originator Message
    ID the PACS puts into its C-STORE requests (PS3.7 9.1.1.1), or by the SOP
    Instance UID when the search listed it.
    """

    def __init__(
        self,
        sink: Sink,
        report: DownloadReport,
        progress: Progress,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.sink = sink
        self.report = report
        self.progress = progress
        #: True when the caller went away: transfers stop at the next check
        self.cancelled: Callable[[], bool] = cancelled or (lambda: False)
        self._lock = threading.Lock()
        self._routes: dict[int, Tally] = {}

    def register(self, msg_id: int, tally: Tally) -> None:
        with self._lock:
            self._routes[msg_id] = tally

    def unregister(self, msg_id: int) -> None:
        with self._lock:
            self._routes.pop(msg_id, None)

    def tally_for(self, msg_id: int | None, sop_uid: str) -> Tally | None:
        """The waiting C-MOVE an instance belongs to (None: none of ours).

        By message ID; else the one whose listed instances hold sop_uid; else,
        when one C-MOVE waits, that one (a PACS may leave the originator out).
        """
        with self._lock:
            tally = self._routes.get(msg_id) if msg_id is not None else None
            if tally is None:
                tally = next(
                    (
                        t
                        for t in self._routes.values()
                        if t.unit.expected
                        and any(r.instance_uid == sop_uid for r in t.unit.expected)
                    ),
                    None,
                )
            if tally is None and msg_id is None and len(self._routes) == 1:
                tally = next(iter(self._routes.values()))
        return tally

    def store(
        self, sop_uid: str, tally: Tally, received: Callable[[], Received | Path]
    ) -> int:
        """Save one received instance: ``received()`` gives its complete temporary
        file (or raises why there is none). Returns the C-STORE status: success
        only for an instance the sink kept."""
        path: Path | None = None
        try:
            got = received()
            if isinstance(got, Path):
                got = Received(got)
            path = got.path
            self.sink(got, sop_uid, tally)
        except DICOMTrolleyError as error:
            error.uids = tuple(uid for uid in error.uids if uid)
            if sop_uid and sop_uid not in error.uids:
                error.uids = (*error.uids, sop_uid)
            self.report.add_failure(f"instance {sop_uid}", error)
            with self._lock:
                tally.failed.add(sop_uid)
            if isinstance(error, DICOMParseError):
                return STATUS_CANNOT_UNDERSTAND
            return STATUS_OUT_OF_RESOURCES
        except Exception as error:  # never let a handler bug hang the PACS
            logger.exception("saving instance %s failed", sop_uid)
            wrapped = StorageError(
                f"cannot save instance {sop_uid}: {error}", uids=[sop_uid]
            )
            self.report.add_failure(f"instance {sop_uid}", wrapped)
            with self._lock:
                tally.failed.add(sop_uid)
            return STATUS_OUT_OF_RESOURCES
        finally:
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        with self._lock:
            tally.received.add(sop_uid)
        return STATUS_SUCCESS


def adopt_file(writer: Any, path: Path) -> int:
    """Put the complete file at path into writer; returns its size.

    A rename when both are on one file system (the spool folder and the
    output folder), else a copy in chunks.
    """
    size = path.stat().st_size
    if isinstance(writer, InstanceWriter):
        try:
            os.replace(path, writer.temp_path)
            return size
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise StorageError(
                    f"cannot move {path} to {writer.temp_path}: {error}"
                ) from error
    with open(path, "rb") as source:
        shutil.copyfileobj(source, _WriterFile(writer), COPY_CHUNK)
    return size


class _WriterFile:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def write(self, data: bytes) -> int:
        self.writer.write(data)
        return len(data)


def disk_sink(
    storage: DICOMDiskStorage,
    output_dir: str | Path,
    report: DownloadReport,
    progress: Progress,
) -> Sink:
    """A sink that commits each file to storage under output_dir."""

    root = Path(output_dir)
    plain = type(storage).open_writer is DICOMDiskStorage.open_writer

    def sink(received: Received, sop_uid: str, tally: Tally) -> int:
        expected = tally.unit.reference(sop_uid)
        path = received.path
        if plain and path.parent == root and storage.transform is None:
            # written in the output folder by the intake: taken as it is (the
            # size, CRC-32 and walk seen while it was written), no copy
            check = received.check
            nbytes = path.stat().st_size if check is None else check.size
            writer = storage.open_writer(root, expected, received=path, check=check)
        else:
            writer = storage.open_writer(output_dir, expected=expected)
            try:
                nbytes = adopt_file(writer, path)
            except BaseException:
                writer.abort()
                raise
        final = writer.commit()
        report.add_saved(final, nbytes)
        progress.advance_bytes(nbytes)
        progress.instance_done(nbytes)
        return nbytes

    return sink


def check_outcome(
    final: Dataset,
    identifier: Dataset | None,
    tally: Tally,
    *,
    peer: Peer,
    operation: str,
    report: DownloadReport,
    hint: str = "",
) -> None:
    """Compare a final C-GET/C-MOVE response with what arrived.

    Instances the PACS did not deliver go into the report, by UID where known.

    Raises
    ------
    DIMSEError
        When the request failed as a whole (a failure status and nothing arrived).
    """
    code = int(final.get("Status", 0xC000))
    completed = int(final.get("NumberOfCompletedSuboperations", 0) or 0)
    failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
    warning = int(final.get("NumberOfWarningSuboperations", 0) or 0)
    unit = tally.unit
    comment = str(final.get("ErrorComment", "") or "")
    arrived = tally.received | tally.failed
    failure_category = code & 0xF000 in (0xA000, 0xC000) or code == 0xFE00
    if failure_category and not arrived and completed + warning == 0:
        raise status_error(
            code,
            peer=peer,
            operation=operation,
            comment=comment,
            hint=hint,
            uids=unit.uids(),
        )
    counts = (
        f"final status {describe_status(code, operation)}, {completed} completed, "
        f"{failed} failed, {warning} warning sub-operation(s)"
    )
    reported_failed = _failed_uids(identifier) - arrived
    if unit.expected is not None:
        missing = [r for r in unit.expected if r.instance_uid not in arrived]
        for ref in missing:
            report.add_failure(
                f"instance {ref.instance_uid}",
                SubOperationError(
                    f"instance {ref.instance_uid} did not arrive ({counts})",
                    peer=peer,
                    operation=operation,
                    status=code,
                    uids=[ref.study_uid, ref.series_uid, ref.instance_uid],
                ),
            )
        return
    for uid in sorted(reported_failed):
        report.add_failure(
            f"instance {uid}",
            SubOperationError(
                f"the PACS failed to send instance {uid} ({counts})",
                peer=peer,
                operation=operation,
                status=code,
                uids=[unit.study_uid, uid],
            ),
        )
    unexplained = failed - len(reported_failed) - len(tally.failed)
    short = completed + warning - len(tally.received)
    if unexplained > 0 or short > 0 or (failure_category and code != 0xFE00):
        what = []
        if unexplained > 0:
            what.append(f"{unexplained} instance(s) failed on the PACS")
        if short > 0:
            what.append(f"{short} instance(s) reported sent never arrived")
        report.add_failure(
            str(unit),
            SubOperationError(
                f"{'; '.join(what) or 'the request failed'} for {unit} ({counts})"
                + (f": {comment}" if comment else ""),
                peer=peer,
                operation=operation,
                status=code,
                uids=unit.uids(),
            ),
        )


def _failed_uids(identifier: Dataset | None) -> set[str]:
    """Failed SOP Instance UID List (0008,0058) of a final response, if any."""
    if identifier is None:
        return set()
    value = identifier.get("FailedSOPInstanceUIDList")
    if not value:
        return set()
    values: Iterable[Any] = [value] if isinstance(value, str) else value
    return {str(v) for v in values if v}
