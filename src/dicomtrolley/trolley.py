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
        """References at max_level or deeper for objects, searching where needed."""
        references: list[DICOMObjectReference] = []
        for downloadable in objects:
            try:
                references.extend(
                    downloadable.contained_references(max_level=max_level)
                )
            except NoReferencesFoundError:
                logger.debug(
                    "Not enough information for %s-level references of %s; searching",
                    max_level.name,
                    downloadable,
                )
                found = self.searcher.find_study_by_id(
                    study_uid=downloadable.reference().study_uid,
                    query_level=QueryLevels.from_object_level(max_level),
                )
                references.extend(
                    _restrict(downloadable, found.contained_references(max_level))
                )
        return references


def _restrict(
    downloadable: DICOMDownloadable, refs: Sequence[DICOMObjectReference]
) -> list[DICOMObjectReference]:
    """Only the refs inside downloadable (a series asks its study: keep its own)."""
    own = downloadable.reference()
    series_uid = getattr(own, "series_uid", None)
    if series_uid is None:
        return list(refs)
    return [ref for ref in refs if getattr(ref, "series_uid", None) == series_uid]
