"""Asking again, on a new association, for what a broken C-GET or C-MOVE did not deliver.

A request that ends in a :class:`~dicomtrolley.exceptions.TransientError` (an
A-ABORT, a connection cut mid-transfer, an idle or total timeout, a busy or
out-of-resources peer) has often delivered part of its instances already: they
are verified on disk (or handed to the caller) and recorded in the download's
:class:`Arrivals`. :class:`Resume` then asks again, under the same
:class:`~dicomtrolley.transport.Retry` policy as HTTP (backoff between tries,
``Retry.total`` retries at most), for only what is missing:

* when the unit's instances are known (the search went that deep, or the unit
  is a list of instances), or can be listed with a C-FIND at IMAGE level
  (:func:`find_instances`): IMAGE-level requests for the missing SOP Instance
  UIDs, one per series, with at most MAX_UIDS_PER_REQUEST UIDs each (list of
  UID matching, PS3.4 C.4.2.2.1 / C.4.3.2.1). A list rather than one request
  per instance: one round trip and one set of sub-operation counts per series
  instead of per instance, and an archive that fails a list as a whole
  (Orthanc, when one UID is unknown) is asked instance by instance anyway by
  :meth:`~dicomtrolley.dimse.sessions.SessionPool.retrieve`;
* when nothing arrived yet, or no instance list can be had: the unit again as
  it was. Instances that arrive a second time are thrown away by
  :meth:`Arrivals.wrap` (answered with success), so every file is saved and
  reported once.

Permanent errors (rejected association, no accepted context, failure statuses,
storage errors) are not retried, nor is a transfer the caller stopped. When
the retries are spent, the last error goes into the report with the study's
(and series') UID and the UIDs of the instances still missing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from dicomtrolley.core import InstanceReference
from dicomtrolley.dimse.find import IMAGE, FindRequest, search
from dicomtrolley.dimse.retrieve import (
    MAX_UIDS_PER_REQUEST,
    Received,
    RetrieveUnit,
    Sink,
    Tally,
)
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.exceptions import DICOMTrolleyError, TransientError
from dicomtrolley.logs import get_module_logger
from dicomtrolley.transport import Retry

logger = get_module_logger("dimse")

ListInstances = Callable[[RetrieveUnit], Sequence[InstanceReference]]
"""The instances of a study or series unit (a C-FIND at IMAGE level)."""


class Arrivals:
    """Every instance that reached the sink in one download, by SOP Instance UID.

    Saved or refused (a refusal is in the report already): either way it is not
    asked for again. Thread-safe: C-MOVE instances arrive on the storage SCP's
    threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._uids: set[str] = set()
        self._studies: set[str] = set()

    def wrap(self, sink: Sink) -> Sink:
        """sink, but an instance that arrived before is thrown away (the
        Receiver deletes its file and answers success)."""

        def once(received: Received, sop_uid: str, tally: Tally) -> int:
            with self._lock:
                again = sop_uid in self._uids
                if sop_uid:
                    self._uids.add(sop_uid)
                    self._studies.add(tally.unit.study_uid)
            if again:
                logger.debug(
                    "instance %s arrived again; the first one is kept", sop_uid
                )
                return 0
            return sink(received, sop_uid, tally)

        return once

    def __contains__(self, sop_uid: object) -> bool:
        with self._lock:
            return sop_uid in self._uids

    def any_of(self, study_uid: str) -> bool:
        """True when some instance of the study arrived."""
        with self._lock:
            return study_uid in self._studies


def image_units(
    refs: Sequence[InstanceReference], patient_id: str = ""
) -> list[RetrieveUnit]:
    """IMAGE-level requests for refs: per series, MAX_UIDS_PER_REQUEST UIDs each."""
    by_series: dict[tuple[str, str], list[InstanceReference]] = {}
    for ref in refs:
        by_series.setdefault((ref.study_uid, ref.series_uid), []).append(ref)
    units = []
    for (study_uid, series_uid), group in by_series.items():
        for start in range(0, len(group), MAX_UIDS_PER_REQUEST):
            chunk = tuple(group[start : start + MAX_UIDS_PER_REQUEST])
            uids = tuple(ref.instance_uid for ref in chunk)
            units.append(
                RetrieveUnit(IMAGE, study_uid, series_uid, uids, chunk, patient_id)
            )
    return units


def find_instances(
    peer: Peer, unit: RetrieveUnit, *, model: str, timeouts: DIMSETimeouts
) -> list[InstanceReference]:
    """The instances of a study or series unit, by C-FIND at IMAGE level
    (relational when the peer accepts it, else level by level)."""
    keys: dict[str, object] = {"StudyInstanceUID": unit.study_uid}
    if unit.series_uid:
        keys["SeriesInstanceUID"] = unit.series_uid
    patient_root = model == "patient"
    if patient_root and unit.patient_id:
        keys["PatientID"] = unit.patient_id
    request = FindRequest(
        keys=keys,
        return_keys=["SeriesInstanceUID", "SOPInstanceUID"],
        patient_root=patient_root,
    )
    refs = []
    for found in search(peer, request, IMAGE, model=model, timeouts=timeouts):
        sop_uid = str(found.get("SOPInstanceUID", "") or "").strip()
        series_uid = str(found.get("SeriesInstanceUID", "") or "").strip()
        study_uid = str(found.get("StudyInstanceUID", "") or unit.study_uid).strip()
        if not sop_uid or not series_uid or study_uid != unit.study_uid:
            continue
        if unit.series_uid and series_uid != unit.series_uid:
            continue
        refs.append(InstanceReference(study_uid, series_uid, sop_uid))
    return list(dict.fromkeys(refs))


class Resume:
    """Fetches units for :func:`~dicomtrolley.download.run_transfers`, asking
    again for what is missing after a transient failure (see the module docstring).

    Parameters
    ----------
    fetch:
        Fetches one unit over the worker's association (``SessionPool.retrieve``).
    reset:
        Drops the worker's association, so that the next request opens a new one.
    arrivals:
        What arrived so far; its :meth:`Arrivals.wrap` must wrap the sink.
    retry:
        How often and when to try again (per unit).
    operation:
        ``C-GET`` or ``C-MOVE``, for the logs and the retry history.
    list_instances:
        Lists a study's or series' instances when the search did not (None: never
        list; such units are asked for again as a whole).
    cancelled:
        True when the caller went away: no more tries.
    """

    def __init__(
        self,
        fetch: Callable[[RetrieveUnit], object],
        reset: Callable[[], None],
        arrivals: Arrivals,
        retry: Retry,
        *,
        operation: str,
        list_instances: ListInstances | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.fetch = fetch
        self.reset = reset
        self.arrivals = arrivals
        self.retry = retry
        self.operation = operation
        self.list_instances = list_instances
        self.cancelled = cancelled

    def retrieve(self, unit: RetrieveUnit) -> None:
        """Fetch unit, retrying what is missing after transient failures.

        Raises
        ------
        TransientError
            When the retries are spent: the last error, its ``uids`` the study
            (and series) and the instances still missing.
        DICOMTrolleyError
            Any permanent error, at once.
        """
        retry = self.retry
        known = unit.expected
        requests = [unit]
        while True:
            try:
                for request in requests:
                    self.fetch(request)
                return
            except TransientError as error:
                failure = error
            if self.cancelled():
                raise failure
            if known and not self._missing(known):
                logger.info(
                    "%s of %s broke off after all had arrived", self.operation, unit
                )
                return
            retry = retry.increment(self.operation, None, error=failure)
            if retry.exhausted:
                raise self._given_up(unit, known, failure, len(retry.history))
            logger.info(
                "%s of %s failed (%s); asking again for what is missing on a new "
                "association (%d retr%s left)",
                self.operation,
                unit,
                failure,
                retry.total,
                "y" if retry.total == 1 else "ies",
            )
            self.reset()
            retry.sleep()
            if known is None and self.arrivals.any_of(unit.study_uid):
                known = self._listed(unit)
            requests = self._requests(unit, known)

    def _requests(
        self, unit: RetrieveUnit, known: Sequence[InstanceReference] | None
    ) -> list[RetrieveUnit]:
        """What to ask for next: the unit as it was, or its missing instances."""
        if known is None:
            return [unit]
        missing = self._missing(known)
        if len(missing) == len(known):
            return [unit]
        return image_units(missing, unit.patient_id)

    def _missing(self, known: Sequence[InstanceReference]) -> list[InstanceReference]:
        return [ref for ref in known if ref.instance_uid not in self.arrivals]

    def _listed(self, unit: RetrieveUnit) -> tuple[InstanceReference, ...] | None:
        """The unit's instances by C-FIND, or None when they cannot be listed."""
        if self.list_instances is None:
            return None
        try:
            found = tuple(self.list_instances(unit))
        except DICOMTrolleyError as error:
            logger.info(
                "cannot list the instances of %s (%s); asking for all of it again",
                unit,
                error,
            )
            return None
        return found or None

    def _given_up(
        self,
        unit: RetrieveUnit,
        known: Sequence[InstanceReference] | None,
        failure: TransientError,
        tries: int,
    ) -> TransientError:
        parents = tuple(uid for uid in (unit.study_uid, unit.series_uid) if uid)
        if known is None:
            failure.uids = unit.uids()
            failure.message += f" (tried {_times(tries)})"
        else:
            missing = [ref.instance_uid for ref in self._missing(known)]
            failure.uids = (*parents, *missing)
            failure.message += (
                f" (tried {_times(tries)}; {len(missing)} instance(s) missing)"
            )
        return failure


def _times(tries: int) -> str:
    return f"{tries} time{'' if tries == 1 else 's'}"
