"""Trolley: one searcher plus one downloader, filling in what the downloader needs.

Searchers and downloaders never talk to each other; the Trolley does. When a
downloader needs deeper references than it was given (WADO-URI needs instances,
some need series), the Trolley asks the searcher for them and goes on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from dicomtrolley.core import (
    DICOMDownloadable,
    DICOMObjectLevels,
    DICOMObjectReference,
    Downloader,
    NonInstanceParameterError,
    NonSeriesParameterError,
    Query,
    QueryLevels,
    Searcher,
    Study,
)
from dicomtrolley.download import DownloadReport, Progress
from dicomtrolley.exceptions import NoReferencesFoundError
from dicomtrolley.logs import get_module_logger
from dicomtrolley.storage import DICOMDiskStorage, StorageDir

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
    """

    def __init__(
        self,
        downloader: Downloader,
        searcher: Searcher,
        storage: DICOMDiskStorage | None = None,
        query_missing: bool = True,
    ) -> None:
        self.downloader = downloader
        self.searcher = searcher
        self.storage = (
            storage if storage is not None else StorageDir(tempfile.gettempdir())
        )
        self.query_missing = query_missing

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
    ) -> DownloadReport:
        """Download objects (studies, series, instances or references) to output_dir.

        With ``use_async=True`` up to ``max_workers`` transfers run at once (default
        4). Each file is written under a temporary name and renamed when complete.
        Failures do not stop the other transfers; at the end a
        DownloadIncompleteError names every instance, series or study that failed.
        """
        items = [objects] if isinstance(objects, DICOMDownloadable) else list(objects)
        workers = (max_workers or 4) if use_async else 1
        logger.info("Downloading %d object(s) to '%s'", len(items), output_dir)
        refs = self._references_for(items)
        try:
            report = self.downloader.save_all(
                refs, self.storage, output_dir, max_workers=workers, progress=progress
            )
        except (NonInstanceParameterError, NonSeriesParameterError) as error:
            # a downloader that only finds out while downloading (4.1.0 style)
            refs = self._deeper_references(refs, error)
            report = self.downloader.save_all(
                refs, self.storage, output_dir, max_workers=workers, progress=progress
            )
        report.raise_for_failures()
        return report

    def _deeper_references(
        self,
        objects: Sequence[DICOMDownloadable],
        error: NonInstanceParameterError | NonSeriesParameterError,
    ) -> list[DICOMObjectReference]:
        if not self.query_missing:
            raise error
        level = (
            DICOMObjectLevels.INSTANCE
            if isinstance(error, NonInstanceParameterError)
            else DICOMObjectLevels.SERIES
        )
        return self.obtain_references(objects, level)

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
