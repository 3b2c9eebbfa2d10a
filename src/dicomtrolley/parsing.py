"""Turn flat search results into the Study → Series → Instance tree, and back.

A search answers with one dataset per study, series or instance. The datasets
are sorted into a tree by their UIDs (:class:`DICOMParseTree`) and then turned
into linked :class:`~dicomtrolley.core.Study`, ``Series`` and ``Instance``
objects. Unlike dicomtrolley 4.1.0, a study or series that only appears through
its children gets the study- or series-level attributes of its first child as
its data (PatientName, StudyDate, Modality ...), instead of an empty dataset.
Building is linear in the number of results: dict look-ups, no rescans.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Sequence

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from dicomtrolley.core import (
    DICOMObject,
    DICOMObjectReference,
    Instance,
    InstanceReference,
    Series,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.datastructures import TreeNode
from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    PermanentError,
    ResponseFormatError,
)
from dicomtrolley.fields import SeriesLevel, SeriesLevelPromotable, StudyLevel

__all__ = [
    "DICOMObject",
    "DICOMObjectNotFound",
    "DICOMObjectReference",
    "DICOMObjectTree",
    "DICOMParseTree",
    "DICOMTrolleyError",
    "Instance",
    "InstanceReference",
    "Series",
    "SeriesReference",
    "Study",
    "StudyReference",
    "TreeNode",
    "flatten",
    "studies_from_datasets",
]


class DICOMObjectNotFound(PermanentError):
    """A reference that is not in the tree."""


def _tags(keywords: Iterable[str]) -> frozenset[int]:
    return frozenset(int(Tag(keyword)) for keyword in keywords)


STUDY_TAGS = _tags(StudyLevel.fields | {"SpecificCharacterSet"})
SERIES_TAGS = _tags(
    SeriesLevel.fields | SeriesLevelPromotable.fields | {"SpecificCharacterSet"}
)

STUDY_UID_TAG = BaseTag(0x0020000D)
SERIES_UID_TAG = BaseTag(0x0020000E)
SOP_UID_TAG = BaseTag(0x00080018)


def uid_of(dataset: Dataset, tag: BaseTag) -> str | None:
    """The UID at tag, or None. Fast: no conversion of any other element."""
    element = dataset._dict.get(tag)
    if element is None:
        return None
    value = element.value if isinstance(element, DataElement) else dataset[tag].value
    if not value:
        return None
    return str(value).strip()


def _subset(dataset: Dataset, tags: frozenset[int]) -> Dataset:
    """A new dataset with the elements of dataset whose tag is in tags.

    Elements are copied (raw elements are immutable and shared): changing the
    study's data must not change the instance dataset it was taken from.
    """
    subset = Dataset()
    for tag, element in dataset._dict.items():
        if tag in tags:
            subset._dict[tag] = (
                element if isinstance(element, RawDataElement) else copy.copy(element)
            )
    return subset


class DICOMParseTree:
    """Datasets sorted into study → series → instance by UID. Insertion ordered.

    ``root`` is a :class:`~dicomtrolley.datastructures.TreeNode`: its children
    are keyed by study UID, theirs by series UID, theirs by SOP instance UID;
    each node's ``data`` is the dataset inserted there (None if none was).

    Parameters
    ----------
    root:
        A tree to start from (default: an empty one).
    allow_overwrite:
        When False, inserting a second non-empty dataset at the same place
        raises DICOMTrolleyError.
    """

    def __init__(
        self, root: TreeNode | None = None, allow_overwrite: bool = False
    ) -> None:
        self.root = root if root else TreeNode(allow_overwrite=allow_overwrite)
        self.allow_overwrite = allow_overwrite

    @classmethod
    def init_from_objects(cls, objects: Sequence[DICOMObject]) -> DICOMParseTree:
        """A tree holding objects and all their children (overwrites allowed)."""
        tree = cls(allow_overwrite=True)
        for item in objects:
            tree.update(item)
        return tree

    def update(self, other: DICOMObject) -> None:
        """Insert other and everything below it."""
        self.insert_dicom_object(other)
        for child in other.children():
            self.update(child)

    def insert(
        self,
        data: Dataset,
        study_uid: str,
        series_uid: str | None = None,
        instance_uid: str | None = None,
    ) -> None:
        """Put data at the given place in the tree, creating parents as needed."""
        if instance_uid and not series_uid:
            raise ResponseFormatError(
                f"Cannot insert instance {instance_uid} of study {study_uid}: "
                "no series UID",
                uids=[study_uid, instance_uid],
            )
        node = self.root[study_uid]
        for uid in (series_uid, instance_uid):
            if not uid:
                break
            node = node[uid]
        if node.data and not self.allow_overwrite:
            raise ResponseFormatError(
                f"Error inserting dataset into {study_uid}/{series_uid}/"
                f"{instance_uid}: a dataset is already there",
                uids=[u for u in (study_uid, series_uid, instance_uid) if u],
            )
        node.allow_overwrite = True  # checked above, with the UIDs in the error
        node.data = data
        node.allow_overwrite = self.allow_overwrite

    def insert_dataset(self, ds: Dataset) -> None:
        """Insert a search result at the level its UIDs say."""
        study_uid = uid_of(ds, STUDY_UID_TAG)
        if not study_uid:
            raise ResponseFormatError(
                "A search result has no StudyInstanceUID; cannot place it"
            )
        series_uid = uid_of(ds, SERIES_UID_TAG)
        instance_uid = uid_of(ds, SOP_UID_TAG) if series_uid else None
        self.insert(ds, study_uid, series_uid, instance_uid)

    def insert_dicom_object(
        self,
        dicom_object: DICOMObject | None = None,
        *,
        obj: DICOMObject | None = None,
    ) -> None:
        """Insert a study, series or instance at its place (its data only).

        ``obj=`` is the name of dicom_object in dicomtrolley 5.0 development
        versions; it still works but warns.
        """
        if obj is not None:
            warnings.warn(
                "insert_dicom_object(obj=...) is deprecated: use "
                "insert_dicom_object(dicom_object=...) (the dicomtrolley 4.1.0 name)",
                DeprecationWarning,
                stacklevel=2,
            )
            dicom_object = obj if dicom_object is None else dicom_object
        if isinstance(dicom_object, Study):
            self.insert(dicom_object.data, dicom_object.uid)
        elif isinstance(dicom_object, Series):
            self.insert(dicom_object.data, dicom_object.parent.uid, dicom_object.uid)
        elif isinstance(dicom_object, Instance):
            series = dicom_object.parent
            self.insert(
                dicom_object.data, series.parent.uid, series.uid, dicom_object.uid
            )
        else:
            raise ResponseFormatError(
                f"Unknown DICOM object {dicom_object}. I do not know where to "
                "insert this in the DICOM tree"
            )

    @staticmethod
    def _data_for(node: TreeNode, tags: frozenset[int]) -> Dataset:
        if node.data is not None and len(node.data):
            return node.data  # type: ignore[no-any-return]
        for child in node.values():
            source = child.data
            if source is None or not len(source):
                first = next(iter(child.values()), None)
                source = first.data if first is not None else None
            if source is not None and len(source):
                return _subset(source, tags)
        return Dataset()

    @staticmethod
    def as_study(study_node_in: tuple[str, TreeNode]) -> Study:
        """A ``(study UID, study node)`` item of :attr:`root` as a linked Study.

        A study or series node without data of its own gets the study- or
        series-level attributes of its first child with data.
        """
        study_uid, node = study_node_in
        data_for = DICOMParseTree._data_for
        study = Study.model_construct(
            uid=str(study_uid), data=data_for(node, STUDY_TAGS), series=[]
        )
        series_list: list[Series] = []
        for series_uid, series_node in node.items():
            series = Series.model_construct(
                uid=series_uid,
                data=data_for(series_node, SERIES_TAGS),
                parent=study,
                instances=[],
            )
            series.instances = [
                Instance.model_construct(
                    uid=instance_uid,
                    data=instance_node.data
                    if instance_node.data is not None
                    else Dataset(),
                    parent=series,
                )
                for instance_uid, instance_node in series_node.items()
            ]
            series_list.append(series)
        study.series = series_list
        return study

    def as_studies(self) -> list[Study]:
        """The tree as linked Study/Series/Instance objects."""
        return [self.as_study(item) for item in self.root.items()]


def studies_from_datasets(datasets: Iterable[Dataset]) -> list[Study]:
    """Search results (one dataset per study, series or instance) as a tree."""
    tree = DICOMParseTree(allow_overwrite=True)
    for dataset in datasets:
        tree.insert_dataset(dataset)
    return tree.as_studies()


def flatten(dicom_object: DICOMObject) -> list[DICOMObject]:
    """The object and everything below it, depth first."""
    result: list[DICOMObject] = [dicom_object]
    for child in dicom_object.children():
        result.extend(flatten(child))
    return result


class DICOMObjectTree:
    """A collection of studies to look objects up in by reference."""

    def __init__(self, objects: Sequence[DICOMObject]) -> None:
        self._study_dict: dict[str, Study] = {
            study.uid: study
            for study in DICOMParseTree.init_from_objects(objects).as_studies()
        }

    def __getitem__(self, study_uid: str) -> Study:
        return self._study_dict[study_uid]

    @property
    def studies(self) -> list[Study]:
        return list(self._study_dict.values())

    def add_study(self, study: Study) -> None:
        """Add study, replacing any study with the same UID."""
        self._study_dict[study.uid] = study

    def retrieve(self, reference: DICOMObjectReference) -> DICOMObject:
        """The object a reference points to.

        Raises
        ------
        DICOMObjectNotFound
            When the tree does not hold it.
        """
        study = self._study_dict.get(reference.study_uid)
        if study is None:
            raise DICOMObjectNotFound(
                f"{reference} not found in tree: Study with uid "
                f"{reference.study_uid} not found in tree",
                uids=[reference.study_uid],
            )
        try:
            if isinstance(reference, StudyReference):
                return study
            if isinstance(reference, SeriesReference):
                return study.get(reference.series_uid)
            if isinstance(reference, InstanceReference):
                return study.get(reference.series_uid).get(reference.instance_uid)
        except KeyError as error:
            raise DICOMObjectNotFound(
                f"{reference} not found in tree (study with uid "
                f"{reference.study_uid} does not hold it)",
                uids=reference.uids(),
            ) from error
        raise PermanentError(
            f"Unknown reference type {type(reference)}", uids=reference.uids()
        )
