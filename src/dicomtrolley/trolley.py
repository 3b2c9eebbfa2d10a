"""Trolley: one searcher plus one downloader, filling in what the downloader needs.

Searchers and downloaders never talk to each other; the Trolley does. When a
downloader needs deeper references than it was given (WADO-URI needs instances,
some need series), the Trolley asks the searcher for them and goes on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from dicomtrolley.catalog import PRESENT, Catalog
from dicomtrolley.core import (
    DICOMDownloadable,
    DICOMObjectLevels,
    DICOMObjectReference,
    Downloader,
    InstanceReference,
    NonInstanceParameterError,
    NonSeriesParameterError,
    Query,
    QueryLevels,
    Searcher,
    SeriesReference,
    Study,
    instance_count,
)
from dicomtrolley.download import (
    DownloadReport,
    NullProgress,
    Progress,
    current_listener,
    run_transfers,
)
from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    NoReferencesFoundError,
    TransientError,
)
from dicomtrolley.logs import get_module_logger
from dicomtrolley.manifest import Manifest, Outcomes, protocol_name
from dicomtrolley.storage import DICOMDiskStorage, StorageDir, record_saved
from dicomtrolley.transport import DEFAULT_RETRY, NO_RETRY, HttpTransport, Retry

logger = get_module_logger("trolley")


class Trolley:
    """Search with one protocol, download with another, save to disk.

    Parameters
    ----------
    downloader:
        Fetches instances (WadoRS, WadoURI, Rad69, DICOMQRGet ...).
    searcher:
        Finds studies (QidoRS, Mint, DICOMQR ...).
    storage:
        Where downloads are written; default ``StorageDir`` (study/series/instance).
    query_missing:
        Ask the searcher for references the downloader needs (default True).
    retry:
        How often a study's search for references is tried again after a
        transient error (see :attr:`search_retry` for the default).
    """

    def __init__(
        self,
        downloader: Downloader,
        searcher: Searcher,
        storage: DICOMDiskStorage | None = None,
        query_missing: bool = True,
        *,
        retry: Retry | None = None,
    ) -> None:
        self.downloader = downloader
        self.searcher = searcher
        self.storage = (
            storage if storage is not None else StorageDir(tempfile.gettempdir())
        )
        self.query_missing = query_missing
        self.retry = retry

    def find_studies(self, query: Query | None = None) -> list[Study]:
        """All studies matching query."""
        return list(self.searcher.find_studies(query if query is not None else Query()))

    def find_study(self, query: Query) -> Study:
        """Exactly one study for query, else DICOMTrolleyError."""
        return self.searcher.find_study(query)

    def find_study_by_id(
        self, study_uid: str, query_level: QueryLevels = QueryLevels.STUDY
    ) -> Study:
        """The study with this UID, down to query_level."""
        return self.searcher.find_study_by_id(study_uid, query_level=query_level)

    def download(
        self,
        objects: DICOMDownloadable | Sequence[DICOMDownloadable],
        output_dir: str | Path,
        use_async: bool = False,
        max_workers: int | None = None,
        progress: Progress | None = None,
        *,
        resume: bool = True,
        manifest: Manifest | None = None,
        row: Any = None,
        query: str | None = None,
    ) -> DownloadReport:
        """Download objects (studies, series, instances or references) to output_dir.

        With ``use_async=True`` up to ``max_workers`` transfers run at once (default
        4). Each file is written under a temporary name and renamed when complete.
        When the downloader needs deeper references than it was given, the
        searcher is asked for them study by study, as part of that study's work:
        a search that fails (after the retries of :attr:`search_retry`) fails
        only its study. Failures do not stop the other studies; at the end a
        DownloadIncompleteError names every instance, series or study that
        failed, with the report of what did arrive.

        Resume (``resume=True``, the default): output_dir's index
        (:mod:`dicomtrolley.catalog`) says which instances are already there,
        intact, in this storage's layout. For a study of which some are, the
        instance list (from the objects, else one instance-level search per
        study) decides what is missing before anything is transferred: a study
        or series that is all there is skipped, one that is partly there is
        asked for by its missing instances (whole series where a series is
        missing entirely), whatever the downloader and layout. Skipped
        instances are in ``report.skipped``. A study the index knows nothing
        of costs nothing extra. A study-level result whose instance count
        (``NumberOfStudyRelatedInstances``) equals what the index holds of it
        needs no search either: the index's list is used, each file checked on
        disk (a server that replaced an instance by another, keeping the
        count, is not noticed; see ``_complete_in_index``).

        ``manifest``: append one line per outcome (saved, skipped, failed) to
        this :class:`~dicomtrolley.manifest.Manifest` (e.g.
        ``Manifest.in_folder(output_dir)``), each with ``row`` (any JSON
        value, e.g. the line of a batch file) and ``query`` (text) when given.
        The library writes no manifest unless asked; the CLI always does.
        """
        items = [objects] if isinstance(objects, DICOMDownloadable) else list(objects)
        workers = (max_workers or 4) if use_async else 1
        logger.info("Downloading %d object(s) to '%s'", len(items), output_dir)
        listener = None
        if manifest is not None:
            listener = Outcomes(
                manifest,
                Path(output_dir),
                protocol=protocol_name(self.downloader),
                row=row,
                query=query,
            )
        token = current_listener.set(listener)
        try:
            report = DownloadReport(listener=listener)
            if self._overrides_4_1_0_path():
                return self._download_datasets(items, output_dir, report, progress)
            if resume:
                items = self._missing_only(items, output_dir, report, progress, workers)
            return self._download(items, output_dir, report, progress, workers)
        finally:
            current_listener.reset(token)

    def _download(
        self,
        items: Sequence[DICOMDownloadable],
        output_dir: str | Path,
        report: DownloadReport,
        progress: Progress | None,
        workers: int,
    ) -> DownloadReport:
        def save_all(refs: Sequence[DICOMDownloadable]) -> DownloadReport:
            return self.downloader.save_all(
                refs, self.storage, output_dir, max_workers=workers, progress=progress
            )

        refs = self._references_for_download(items, report, workers) if items else []
        if refs:
            try:
                done = save_all(refs)
            except (NonInstanceParameterError, NonSeriesParameterError) as error:
                # a downloader that only finds out while downloading (4.1.0 style)
                done = save_all(self._search_per_study(refs, error, report, workers))
            report.merge(done)
        report.raise_for_failures()
        return report

    def _missing_only(
        self,
        items: Sequence[DICOMDownloadable],
        output_dir: str | Path,
        report: DownloadReport,
        progress: Progress | None,
        workers: int,
    ) -> list[DICOMDownloadable]:
        """items reduced to what output_dir lacks (see download, resume).

        The instances already there go into report as skipped.
        """
        catalog = Catalog.for_folder(output_dir)
        groups: dict[str, list[DICOMDownloadable]] = {}
        for obj in items:
            groups.setdefault(obj.reference().study_uid, []).append(obj)
        known = {uid for uid in groups if catalog.has_study(uid)}
        if not known:
            return list(items)
        layout = self.storage.layout_key()
        proven = {
            uid: refs
            for uid in known
            if (refs := _complete_in_index(groups[uid], catalog, layout)) is not None
        }
        lists = self._instance_lists(
            {u: groups[u] for u in known - proven.keys()}, workers
        )
        lists.update(proven)
        root = Path(output_dir)

        def fits(found: Path) -> bool:
            return self.storage.fits(found, root)

        shown = progress or NullProgress()
        plan: dict[str, list[DICOMDownloadable]] = {}
        for study_uid, refs in lists.items():
            present = catalog.present_of((r.instance_uid for r in refs), layout, fits)
            if not present:
                plan[study_uid] = self._whole(groups[study_uid], refs)
                continue
            shown.add_total(instances=len(present))
            for path in present.values():
                report.add_skipped(path)
                shown.instance_done(skipped=True)
            missing = [r for r in refs if r.instance_uid not in present]
            plan[study_uid] = self._by_series(missing, refs)
            logger.info(
                "Study %s: %d instance(s) already in %s, %d to fetch",
                study_uid,
                len(present),
                output_dir,
                len(missing),
            )
        result: list[DICOMDownloadable] = []
        emitted: set[str] = set()
        for obj in items:
            study_uid = obj.reference().study_uid
            if study_uid not in plan:
                result.append(obj)
            elif study_uid not in emitted:
                result.extend(plan[study_uid])
                emitted.add(study_uid)
        return result

    def _instance_lists(
        self, groups: dict[str, list[DICOMDownloadable]], workers: int
    ) -> dict[str, list[InstanceReference]]:
        """The instances of each group of objects (one study each).

        From the objects where they hold them, else from one instance-level
        search per study. A study whose search fails is left out (it is
        downloaded as asked, without resume).
        """
        lists: dict[str, list[InstanceReference]] = {}
        to_search: list[str] = []
        for study_uid, objs in groups.items():
            try:
                refs = [
                    ref
                    for obj in objs
                    for ref in obj.contained_references(DICOMObjectLevels.INSTANCE)
                ]
            except NoReferencesFoundError:
                to_search.append(study_uid)
                continue
            lists[study_uid] = _instances(refs)
        if not to_search or not self.query_missing:
            return lists

        def search(study_uid: str) -> None:
            refs = self._obtain_with_retry(
                groups[study_uid], DICOMObjectLevels.INSTANCE
            )
            lists[study_uid] = _instances(refs)

        scratch = DownloadReport(listener=None)
        run_transfers(to_search, search, scratch, workers=workers, uids_of=_one_uid)
        for failure in scratch.failures:
            logger.warning(
                "cannot list the instances of %s (%s); downloading it whole",
                failure.what,
                failure.error,
            )
        return lists

    def _whole(
        self, objs: list[DICOMDownloadable], refs: list[InstanceReference]
    ) -> list[DICOMDownloadable]:
        """objs as they are, or their instances when the downloader needs them
        (the search is done already)."""
        try:
            self.downloader.check_references(objs)
        except (NonInstanceParameterError, NonSeriesParameterError):
            return list(refs)
        return list(objs)

    def _by_series(
        self, missing: list[InstanceReference], every: list[InstanceReference]
    ) -> list[DICOMDownloadable]:
        """The missing instances; a series missing entirely as one reference
        when the downloader takes series."""
        count: dict[tuple[str, str], int] = {}
        for ref in every:
            count[(ref.study_uid, ref.series_uid)] = (
                count.get((ref.study_uid, ref.series_uid), 0) + 1
            )
        by_series: dict[tuple[str, str], list[InstanceReference]] = {}
        for ref in missing:
            by_series.setdefault((ref.study_uid, ref.series_uid), []).append(ref)
        result: list[DICOMDownloadable] = []
        for (study_uid, series_uid), refs in by_series.items():
            whole = SeriesReference(study_uid, series_uid)
            if len(refs) == count[(study_uid, series_uid)] and self._takes(whole):
                result.append(whole)
            else:
                result.extend(refs)
        return result

    def _takes(self, ref: DICOMObjectReference) -> bool:
        try:
            self.downloader.check_references([ref])
        except (NonInstanceParameterError, NonSeriesParameterError):
            return False
        return True

    def _overrides_4_1_0_path(self) -> bool:
        """True for a subclass that overrides fetch_all_datasets (4.1.0 style).

        dicomtrolley 4.1.0 downloaded by saving every dataset of
        :meth:`fetch_all_datasets`; a subclass that changes that method expects
        its datasets to be the ones saved.
        """
        return type(self).fetch_all_datasets is not Trolley.fetch_all_datasets

    def _download_datasets(
        self,
        objects: Sequence[DICOMDownloadable],
        output_dir: str | Path,
        report: DownloadReport,
        progress: Progress | None,
    ) -> DownloadReport:
        """The 4.1.0 way: each dataset of fetch_all_datasets through storage.save."""
        logger.info("%s overrides fetch_all_datasets: saving its datasets", self)
        try:
            for dataset in self.fetch_all_datasets(objects):
                path = self.storage.save(dataset, path=output_dir)
                if path is not None:
                    record_saved(
                        output_dir,
                        Path(path),
                        dataset,
                        layout=self.storage.layout_key(),
                    )
                report.add_saved(path)
                if progress is not None:
                    progress.instance_done()
        except DICOMTrolleyError as error:
            report.add_failure(f"datasets of {len(objects)} object(s)", error)
        report.raise_for_failures()
        return report

    @property
    def search_retry(self) -> Retry:
        """How often one study's search for references is tried again.

        The ``retry`` given to the Trolley, else none on top of a searcher
        that retries its own requests (the HTTP searchers do, under their
        transport's policy), else :data:`~dicomtrolley.transport.DEFAULT_RETRY`.
        """
        if self.retry is not None:
            return self.retry
        if isinstance(getattr(self.searcher, "transport", None), HttpTransport):
            return NO_RETRY
        return DEFAULT_RETRY

    def _references_for_download(
        self,
        objects: Sequence[DICOMDownloadable],
        report: DownloadReport,
        workers: int,
    ) -> Sequence[DICOMDownloadable]:
        """objects, or their deeper references where the downloader needs them."""
        try:
            self.downloader.check_references(objects)
            return list(objects)
        except (NonInstanceParameterError, NonSeriesParameterError) as error:
            refs = self._search_per_study(objects, error, report, workers)
        if refs:
            self.downloader.check_references(refs)
        return list(refs)

    def _search_per_study(
        self,
        objects: Sequence[DICOMDownloadable],
        error: NonInstanceParameterError | NonSeriesParameterError,
        report: DownloadReport,
        workers: int,
    ) -> list[DICOMObjectReference]:
        """Deeper references for objects, one study at a time, workers at once.

        A study whose search fails goes into report with its UIDs (the study's
        and those of the objects asked for in it); the others go on.
        """
        if not self.query_missing:
            raise error
        level = _level_needed(error)
        by_study: dict[str, _StudyWork] = {}
        for obj in objects:
            uid = obj.reference().study_uid
            by_study.setdefault(uid, _StudyWork(uid, [])).objects.append(obj)
        found: dict[str, list[DICOMObjectReference]] = {}

        def search(work: _StudyWork) -> None:
            found[work.study_uid] = self._obtain_with_retry(work.objects, level)

        run_transfers(
            list(by_study.values()),
            search,
            report,
            workers=workers,
            uids_of=_StudyWork.uids,
        )
        return [ref for uid in by_study for ref in found.get(uid, [])]

    def _obtain_with_retry(
        self, objects: Sequence[DICOMDownloadable], level: DICOMObjectLevels
    ) -> list[DICOMObjectReference]:
        """obtain_references, tried again on transient errors (search_retry)."""
        retry = self.search_retry
        while True:
            try:
                return self.obtain_references(objects, level)
            except TransientError as error:
                retry = retry.increment("SEARCH", str(self.searcher), error=error)
                if retry.exhausted:
                    raise
                logger.info("searching again for %s after %s", objects[0], error)
                retry.sleep()

    def _deeper_references(
        self,
        objects: Sequence[DICOMDownloadable],
        error: NonInstanceParameterError | NonSeriesParameterError,
    ) -> list[DICOMObjectReference]:
        if not self.query_missing:
            raise error
        return self.obtain_references(objects, _level_needed(error))

    def _references_for(
        self, objects: Sequence[DICOMDownloadable]
    ) -> Sequence[DICOMDownloadable]:
        """objects, or deeper references when the downloader asks for them."""
        try:
            self.downloader.check_references(objects)
            return objects
        except (NonInstanceParameterError, NonSeriesParameterError) as error:
            refs = self._deeper_references(objects, error)
        self.downloader.check_references(refs)
        return refs

    def fetch_all_datasets(
        self, objects: Sequence[DICOMDownloadable]
    ) -> Iterator[Dataset]:
        """Every instance in objects as a pydicom Dataset in memory."""
        items = [objects] if isinstance(objects, DICOMDownloadable) else list(objects)
        refs = self._references_for(items)
        produced = False
        try:
            for dataset in self.downloader.datasets(refs):
                produced = True
                yield dataset
        except (NonInstanceParameterError, NonSeriesParameterError) as error:
            if produced:
                raise
            yield from self.downloader.datasets(self._deeper_references(refs, error))

    def obtain_references(
        self, objects: Sequence[DICOMDownloadable], max_level: DICOMObjectLevels
    ) -> list[DICOMObjectReference]:
        """References at max_level or deeper for objects, searching where needed.

        Each study is searched for at most once, however many of its series or
        instances ask for it.

        Raises
        ------
        NoReferencesFoundError
            When the searcher's answer holds nothing at max_level for an object
            (an unknown series, or a study without instances).
        """
        references: list[DICOMObjectReference] = []
        found: dict[str, tuple[DICOMObjectReference, ...]] = {}
        for downloadable in objects:
            try:
                references.extend(
                    downloadable.contained_references(max_level=max_level)
                )
                continue
            except NoReferencesFoundError:
                logger.debug(
                    "Not enough information for %s-level references of %s; searching",
                    max_level.name,
                    downloadable,
                )
            own = downloadable.reference()
            if own.study_uid not in found:
                study = self.searcher.find_study_by_id(
                    study_uid=own.study_uid,
                    query_level=QueryLevels.from_object_level(max_level),
                )
                found[own.study_uid] = _parts(study, max_level)
            parts = _restrict(own, found[own.study_uid])
            if isinstance(downloadable, Study) and downloadable.series:
                # a study from a series-level search: only the series it holds
                wanted = {series.uid for series in downloadable.series}
                parts = [p for p in parts if getattr(p, "series_uid", None) in wanted]
            if not parts:
                raise NoReferencesFoundError(
                    f"{self.searcher} found nothing at {max_level.name} level "
                    f"for {own}",
                    uids=own.uids(),
                )
            references.extend(parts)
        return references


@dataclass
class _StudyWork:
    """The objects of one study whose references are searched for together."""

    study_uid: str
    objects: list[DICOMDownloadable]

    def uids(self) -> tuple[str, ...]:
        """The study's UID, then those of the objects asked for in it."""
        uids = [self.study_uid]
        for obj in self.objects:
            uids.extend(uid for uid in obj.reference().uids() if uid not in uids)
        return tuple(uids)

    def __str__(self) -> str:
        return f"search for the references of study {self.study_uid}"


def _complete_in_index(
    objs: Sequence[DICOMDownloadable], catalog: Catalog, layout: str | None
) -> list[InstanceReference] | None:
    """The instances of a study the index already holds all of, else None.

    Only for one study-level search result that says how many instances the
    study has (``NumberOfStudyRelatedInstances``, from this run's search, so a
    study that gained or lost instances on the server since does not match):
    when the index holds exactly that many instances of the study in this
    layout, they are its instance list and no instance-level search is sent.
    Each file is still checked on disk (size) before it is skipped; one gone or
    damaged is fetched again. What this cannot see: the server replacing an
    instance by another between two runs, keeping the count; ``resume=False``
    or another folder fetches everything again.
    """
    if len(objs) != 1 or not isinstance(objs[0], Study) or objs[0].series:
        return None
    expected = instance_count(objs[0].data)
    if expected is None:
        return None
    entries = [
        entry
        for entry in catalog.entries(objs[0].uid)
        if entry.state == PRESENT and entry.layout == layout
    ]
    if expected <= 0 or len(entries) != expected:
        return None
    return [
        InstanceReference(
            study_uid=entry.study_uid,
            series_uid=entry.series_uid,
            instance_uid=entry.instance_uid,
        )
        for entry in entries
    ]


def _instances(refs: Sequence[DICOMObjectReference]) -> list[InstanceReference]:
    """The instance references among refs, each once, in order."""
    return list(dict.fromkeys(r for r in refs if isinstance(r, InstanceReference)))


def _one_uid(study_uid: str) -> tuple[str, ...]:
    return (study_uid,)


def _level_needed(
    error: NonInstanceParameterError | NonSeriesParameterError,
) -> DICOMObjectLevels:
    if isinstance(error, NonInstanceParameterError):
        return DICOMObjectLevels.INSTANCE
    return DICOMObjectLevels.SERIES


def _parts(
    study: Study, max_level: DICOMObjectLevels
) -> tuple[DICOMObjectReference, ...]:
    """References at max_level in a freshly searched study.

    Unlike Study.contained_references this does not fail on a series that the
    server reports without instances: that series is empty.
    """
    if max_level >= DICOMObjectLevels.STUDY:
        return (study.reference(),)
    if max_level == DICOMObjectLevels.SERIES:
        return tuple(series.reference() for series in study.all_series())
    return tuple(instance.reference() for instance in study.all_instances())


def _restrict(
    own: DICOMObjectReference, refs: Sequence[DICOMObjectReference]
) -> list[DICOMObjectReference]:
    """Only the refs inside own (a series asks its study: keep its own)."""
    series_uid = getattr(own, "series_uid", None)
    if series_uid is None:
        return list(refs)
    instance_uid = getattr(own, "instance_uid", None)
    return [
        ref
        for ref in refs
        if getattr(ref, "series_uid", None) == series_uid
        and (instance_uid is None or getattr(ref, "instance_uid", None) == instance_uid)
    ]
