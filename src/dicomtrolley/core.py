"""The shared model: levels, references, the study/series/instance tree, and the
Searcher and Downloader bases that every protocol adapter implements.

The names here are dicomtrolley 4.1.0's public API; scripts written for it import
from this module and keep working.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict
from pydicom.dataset import Dataset

from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    NonInstanceParameterError,
    NonSeriesParameterError,
    NoQueryResultsError,
    NoReferencesFoundError,
    PermanentError,
    ResponseFormatError,
    UnSupportedParameterError,
)
from dicomtrolley.levels import DICOMObjectLevels, QueryLevels
from dicomtrolley.logs import get_module_logger
from dicomtrolley.query import ExtendedQuery, Query, QuerySubType

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from dicomtrolley.download import DownloadReport, Progress, SaveJob
    from dicomtrolley.storage import DICOMDiskStorage

__all__ = [
    "DICOMDownloadable",
    "DICOMObject",
    "DICOMObjectLevels",
    "DICOMObjectReference",
    "DICOMTrolleyError",
    "Downloader",
    "ExtendedQuery",
    "Instance",
    "InstanceReference",
    "NoReferencesFoundError",
    "NonInstanceParameterError",
    "NonSeriesParameterError",
    "Query",
    "QueryLevels",
    "QuerySubType",
    "Searcher",
    "Series",
    "SeriesReference",
    "Study",
    "StudyReference",
    "UnSupportedParameterError",
    "get_module_logger",
    "to_instance_refs",
    "to_references",
    "to_series_level_refs",
]

logger = get_module_logger("core")


class DICOMDownloadable:
    """Anything a Downloader accepts: a reference or a searched object."""

    def reference(self) -> DICOMObjectReference:
        raise NotImplementedError()

    def contained_references(
        self, max_level: DICOMObjectLevels
    ) -> tuple[DICOMObjectReference, ...]:
        """References at ``max_level`` or deeper that together make up this object.

        Raises
        ------
        NoReferencesFoundError
            When this object does not know its parts at that level (a study
            reference, or a study found by a study-level search).
        """
        raise NotImplementedError()


@dataclass(frozen=True)
class DICOMObjectReference(DICOMDownloadable):
    """A study, series or instance by UID only. Frozen and hashable."""

    study_uid: str

    @property
    def level(self) -> DICOMObjectLevels:
        raise NotImplementedError()

    def reference(self) -> DICOMObjectReference:
        return self

    def uids(self) -> tuple[str, ...]:
        """The UIDs of this reference, study first (those that are set)."""
        values = (getattr(self, f.name) for f in fields(self))  # astuple deep-copies
        return tuple(str(value) for value in values if value)

    def contained_references(
        self, max_level: DICOMObjectLevels
    ) -> tuple[DICOMObjectReference, ...]:
        if max_level < self.level:
            raise NoReferencesFoundError(
                f"{self} does not contain references of {max_level.name} level or "
                "lower",
                uids=self.uids(),
            )
        return (self,)


@dataclass(frozen=True)
class StudyReference(DICOMObjectReference):
    """A whole study."""

    study_uid: str

    @property
    def level(self) -> DICOMObjectLevels:
        return DICOMObjectLevels.STUDY

    def __str__(self) -> str:
        return f"StudyReference {self.study_uid}"


@dataclass(frozen=True)
class SeriesReference(DICOMObjectReference):
    """One series of a study."""

    study_uid: str
    series_uid: str

    @property
    def level(self) -> DICOMObjectLevels:
        return DICOMObjectLevels.SERIES

    def __str__(self) -> str:
        return f"SeriesReference {self.study_uid} -> {self.series_uid}"


@dataclass(frozen=True)
class InstanceReference(DICOMObjectReference):
    """One instance (SOP instance: an image, a report ...)."""

    study_uid: str
    series_uid: str
    instance_uid: str

    @property
    def level(self) -> DICOMObjectLevels:
        return DICOMObjectLevels.INSTANCE

    def __str__(self) -> str:
        return (
            f"InstanceReference {self.study_uid} -> {self.series_uid} -> "
            f"{self.instance_uid}"
        )


class DICOMObject(BaseModel, DICOMDownloadable):
    """A study, series or instance found by a search, with its DICOM attributes.

    Objects know their parent and children. ``data`` holds the attributes the
    search returned for this level.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    uid: str
    data: Dataset

    def __str__(self) -> str:
        return f"{type(self).__name__} {self.uid}"

    def __repr__(self) -> str:  # parent <-> children would recurse forever
        return f"{type(self).__name__}(uid={self.uid!r})"

    def __eq__(self, other: object) -> bool:
        """Same type, UID, data and children. Parents are not compared (no cycles)."""
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, DICOMObject)
        return (
            self.uid == other.uid
            and self.data == other.data
            and list(self.children()) == list(other.children())
        )

    __hash__ = None  # type: ignore[assignment]

    def children(self) -> Sequence[DICOMObject]:
        raise NotImplementedError()

    def root(self) -> Study:
        raise NotImplementedError()

    def all_instances(self) -> list[Instance]:
        raise NotImplementedError()

    def all_series(self) -> list[Series]:
        raise NotImplementedError()

    def max_object_depth(self) -> DICOMObjectLevels:
        """The deepest level this object holds: STUDY, SERIES or INSTANCE."""
        raise NotImplementedError()

    @staticmethod
    def extract_refs(
        objects: Iterable[DICOMObject],
    ) -> tuple[DICOMObjectReference, ...]:
        refs = tuple(x.reference() for x in objects)
        if not refs:
            raise NoReferencesFoundError("object holds no deeper objects")
        return refs


class Instance(DICOMObject):
    """One instance, with its series as parent."""

    parent: Series

    def children(self) -> Sequence[DICOMObject]:
        return []

    def root(self) -> Study:
        return self.parent.parent

    def all_instances(self) -> list[Instance]:
        return [self]

    def all_series(self) -> list[Series]:
        return [self.parent]

    def max_object_depth(self) -> DICOMObjectLevels:
        return DICOMObjectLevels.INSTANCE

    def reference(self) -> InstanceReference:
        return InstanceReference(
            study_uid=self.parent.parent.uid,
            series_uid=self.parent.uid,
            instance_uid=self.uid,
        )

    def contained_references(
        self, max_level: DICOMObjectLevels
    ) -> tuple[DICOMObjectReference, ...]:
        return (self.reference(),)


class Series(DICOMObject):
    """One series: its instances (if the search went that deep) and its study."""

    instances: Sequence[Instance]
    parent: Study

    def __getitem__(self, instance_uid: str) -> Instance:
        return self.get(instance_uid)

    def get(self, instance_uid: str) -> Instance:
        """The instance with this UID. KeyError when the series does not hold it."""
        for instance in self.instances:
            if instance.uid == instance_uid:
                return instance
        raise KeyError(f'instance with uid "{instance_uid}" not found in series')

    def children(self) -> Sequence[DICOMObject]:
        return self.instances

    def root(self) -> Study:
        return self.parent

    def all_instances(self) -> list[Instance]:
        return list(self.instances)

    def all_series(self) -> list[Series]:
        return [self]

    def max_object_depth(self) -> DICOMObjectLevels:
        return (
            DICOMObjectLevels.INSTANCE if self.instances else DICOMObjectLevels.SERIES
        )

    def reference(self) -> SeriesReference:
        return SeriesReference(study_uid=self.parent.uid, series_uid=self.uid)

    def contained_references(
        self, max_level: DICOMObjectLevels
    ) -> tuple[DICOMObjectReference, ...]:
        if max_level >= DICOMObjectLevels.SERIES:
            return (self.reference(),)
        try:
            return self.extract_refs(self.instances)
        except NoReferencesFoundError as error:
            raise NoReferencesFoundError(
                f"{self} holds no instances", uids=[self.parent.uid, self.uid]
            ) from error


class Study(DICOMObject):
    """One study: its series (if the search went that deep)."""

    series: Sequence[Series]

    def __getitem__(self, series_uid: str) -> Series:
        return self.get(series_uid)

    def get(self, series_uid: str) -> Series:
        """The series with this UID. KeyError when the study does not hold it."""
        for series in self.series:
            if series.uid == series_uid:
                return series
        raise KeyError(f'series with uid "{series_uid}" not found in study')

    def children(self) -> Sequence[DICOMObject]:
        return self.series

    def root(self) -> Study:
        return self

    def all_instances(self) -> list[Instance]:
        return [instance for series in self.series for instance in series.instances]

    def all_series(self) -> list[Series]:
        return list(self.series)

    def max_object_depth(self) -> DICOMObjectLevels:
        """The level down to which every series of the study is known.

        A study with one series that holds instances and one that does not is
        only known down to SERIES level: contained_references(INSTANCE) would
        raise for it.
        """
        if not self.series:
            return DICOMObjectLevels.STUDY
        return max(s.max_object_depth() for s in self.series)

    def reference(self) -> StudyReference:
        return StudyReference(study_uid=self.uid)

    def contained_references(
        self, max_level: DICOMObjectLevels
    ) -> tuple[DICOMObjectReference, ...]:
        if max_level >= DICOMObjectLevels.STUDY:
            return (self.reference(),)
        if max_level == DICOMObjectLevels.SERIES:
            if not self.series:
                raise NoReferencesFoundError(f"{self} holds no series", uids=[self.uid])
            return self.extract_refs(self.series)
        refs: list[DICOMObjectReference] = []
        for series in self.series:
            refs.extend(series.contained_references(max_level))
        if not refs:
            raise NoReferencesFoundError(f"{self} holds no instances", uids=[self.uid])
        return tuple(refs)


Instance.model_rebuild()
Series.model_rebuild()
Study.model_rebuild()


def to_references(
    objects: Iterable[DICOMDownloadable], max_level: DICOMObjectLevels
) -> list[DICOMObjectReference]:
    """References at max_level or deeper for all objects.

    Raises
    ------
    NoReferencesFoundError
        When one of the objects does not know its parts at that level.
    """
    refs: list[DICOMObjectReference] = []
    for obj in objects:
        refs.extend(obj.contained_references(max_level=max_level))
    return refs


def to_instance_refs(objects: Iterable[DICOMDownloadable]) -> list[InstanceReference]:
    """Instance references for all objects, or NonInstanceParameterError."""
    try:
        refs = to_references(objects, max_level=DICOMObjectLevels.INSTANCE)
    except NoReferencesFoundError as error:
        raise NonInstanceParameterError(
            f"Cannot obtain instance references: {error}", uids=error.uids
        ) from error
    return [ref for ref in refs if isinstance(ref, InstanceReference)]


def to_series_level_refs(
    objects: Iterable[DICOMDownloadable],
) -> list[DICOMObjectReference]:
    """Series or instance references for all objects, or NonSeriesParameterError."""
    try:
        return to_references(objects, max_level=DICOMObjectLevels.SERIES)
    except NoReferencesFoundError as error:
        raise NonSeriesParameterError(
            f"Cannot obtain series references: {error}", uids=error.uids
        ) from error


class Searcher:
    """Something that finds studies. Protocol adapters implement find_studies."""

    def find_studies(self, query: Query) -> Sequence[Study]:
        raise NotImplementedError()

    def find_study(self, query: Query) -> Study:
        """Exactly one study for query.

        Raises
        ------
        DICOMTrolleyError
            When the search finds no study or more than one.
        """
        results = self.find_studies(query)
        if len(results) != 1:
            error_class = NoQueryResultsError if not results else PermanentError
            raise error_class(
                f"Expected exactly one study for query '{query.to_short_string()}', "
                f"but found {len(results) or 'none'}"
            )
        return results[0]

    def find_study_by_id(
        self, study_uid: str, query_level: QueryLevels = QueryLevels.STUDY
    ) -> Study:
        """The study with this UID, searched down to query_level."""
        return self.find_study(
            Query(StudyInstanceUID=study_uid, query_level=query_level)
        )


class Downloader:
    """Something that downloads instances. Protocol adapters implement datasets."""

    #: False (the default in-memory :meth:`save_all`): an error of a unit ends
    #: the download and is raised, as in 4.1.0. True: it goes into the report
    #: and the other units go on.
    failures_per_unit: ClassVar[bool] = False

    def get_dataset(self, instance: InstanceReference) -> Dataset:
        """One instance as a pydicom Dataset in memory."""
        datasets = list(self.datasets([instance]))
        if len(datasets) != 1:
            raise ResponseFormatError(
                f"Expected one dataset for {instance}, got {len(datasets)}",
                uids=[instance.instance_uid],
            )
        return datasets[0]

    def datasets(self, objects: Sequence[DICOMDownloadable]) -> Iterator[Dataset]:
        """Every instance in objects, as pydicom Datasets in memory.

        Raises
        ------
        NonSeriesParameterError, NonInstanceParameterError
            When this downloader needs deeper references than objects hold.
        """
        raise NotImplementedError()

    def check_references(self, objects: Sequence[DICOMDownloadable]) -> None:
        """Raise NonSeries/NonInstanceParameterError before any transfer starts.

        Downloaders that need series or instance references override this so the
        Trolley can fill in references before downloading anything.
        """

    def save_all(
        self,
        objects: Sequence[DICOMDownloadable],
        storage: DICOMDiskStorage,
        output_dir: str | Path,
        *,
        max_workers: int | None = None,
        progress: Progress | None = None,
    ) -> DownloadReport:
        """Download objects into storage under output_dir.

        The one shape of every adapter's download to disk:

        1. :meth:`plan_saves`: the transfer units (requests) for objects, less
           what is already on disk (reported skipped);
        2. :meth:`save_workers`: how many units at once (at most one per unit),
           and :meth:`prepare_workers` for that many;
        3. :meth:`save_unit` for each unit, workers at a time. A unit that fails
           goes into the report with its UIDs and the others go on; an error
           for which :meth:`stops_save_all` is true is raised instead.

        The default fetches each instance in memory (:meth:`datasets`) and
        saves it with ``storage.save``, as 4.1.0 did; streaming adapters plan
        their own requests and write each instance while it arrives.
        """
        from dicomtrolley.download import NullProgress, SaveJob

        items = [objects] if isinstance(objects, DICOMDownloadable) else list(objects)
        job = SaveJob(
            items, storage, output_dir, progress or NullProgress(), max_workers
        )
        units = self.plan_saves(job)
        workers = max(1, min(self.save_workers(job), len(units)))
        self.prepare_workers(workers)
        self.save_units(job, units, workers)
        return job.report

    def plan_saves(self, job: SaveJob) -> Sequence[Any]:
        """The units :meth:`save_unit` fetches for job.objects (default: one, all).

        Adapters skip what is on disk here (:meth:`SaveJob.skip_present`).
        Raises NonSeries/NonInstanceParameterError when the objects are not
        deep enough for this downloader.
        """
        self.check_references(job.objects)
        return [InMemoryUnit(tuple(job.objects))]

    def save_workers(self, job: SaveJob) -> int:
        """How many units to fetch at once (default: what the caller asked for)."""
        return job.max_workers or 1

    def prepare_workers(self, workers: int) -> None:
        """Make room for workers transfers at once (e.g. a connection pool)."""

    def save_units(self, job: SaveJob, units: Sequence[Any], workers: int) -> None:
        """Run :meth:`save_unit` for every unit, workers at a time."""
        from dicomtrolley.download import run_transfers

        run_transfers(
            units,
            lambda unit: self.save_unit(job, unit),
            job.report,
            workers=workers,
            uids_of=_unit_uids,
            stops_all=self.stops_save_all,
        )

    def save_unit(self, job: SaveJob, unit: Any) -> None:
        """Fetch one unit of :meth:`plan_saves` and save what it holds.

        The default saves each dataset of :meth:`datasets` with storage.save;
        a file that cannot be stored fails its instance only.
        """
        for dataset in self.datasets(list(unit.objects)):
            job.save_dataset(dataset)

    def stops_save_all(self, error: DICOMTrolleyError) -> bool:
        """True when error ends the whole save_all rather than failing one unit.

        References that are not deep enough always do (the Trolley then
        searches deeper and tries again); so does every error when
        :attr:`failures_per_unit` is False.
        """
        return references_too_shallow(error) or not self.failures_per_unit


@dataclass(frozen=True)
class InMemoryUnit:
    """All objects of a save_all, fetched by :meth:`Downloader.datasets`."""

    objects: tuple[DICOMDownloadable, ...]

    def uids(self) -> tuple[str, ...]:
        return tuple(obj.reference().study_uid for obj in self.objects)


def instance_count(
    data: Any, keyword: str = "NumberOfStudyRelatedInstances"
) -> int | None:
    """The instance count a search answered in data (a Dataset), or None when
    it is missing or not a number (a server's IS value may be anything)."""
    value = data.get(keyword)
    value = value.value if hasattr(value, "value") else value
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def references_too_shallow(error: DICOMTrolleyError) -> bool:
    """For :meth:`Downloader.stops_save_all`: the Trolley must search deeper."""
    return isinstance(error, NonInstanceParameterError | NonSeriesParameterError)


def _unit_uids(unit: Any) -> tuple[str, ...]:
    uids: tuple[str, ...] = unit.uids()
    return uids
