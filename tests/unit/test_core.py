"""The shared model: levels, references, the study tree, Searcher and Downloader."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import pytest
from pydicom.dataset import Dataset

from dicomtrolley.core import (
    DICOMDownloadable,
    DICOMObjectLevels,
    Downloader,
    InstanceReference,
    NonInstanceParameterError,
    NonSeriesParameterError,
    Query,
    QueryLevels,
    Searcher,
    SeriesReference,
    Study,
    StudyReference,
    to_instance_refs,
    to_references,
    to_series_level_refs,
)
from dicomtrolley.exceptions import DICOMTrolleyError, NoReferencesFoundError
from tests.conftest import StudyFactory

STUDY, SERIES, INSTANCE = (
    DICOMObjectLevels.STUDY,
    DICOMObjectLevels.SERIES,
    DICOMObjectLevels.INSTANCE,
)


@pytest.fixture
def study(make_study: StudyFactory) -> Study:
    """Study 1 with series 1.1 (instances 1.1.1, 1.1.2) and 1.2 (1.2.1)."""
    return make_study("1", {"1.1": ["1.1.1", "1.1.2"], "1.2": ["1.2.1"]})


# --------------------------------------------------------------------------- #
# levels
# --------------------------------------------------------------------------- #


def test_object_levels_are_ordered_study_highest() -> None:
    assert (STUDY, SERIES, INSTANCE) == (2, 1, 0)
    assert INSTANCE < SERIES < STUDY


@pytest.mark.parametrize(
    ("query_level", "object_level"),
    [("STUDY", STUDY), ("SERIES", SERIES), ("INSTANCE", INSTANCE)],
)
def test_level_conversions_round_trip(
    query_level: str, object_level: DICOMObjectLevels
) -> None:
    assert DICOMObjectLevels.from_query_level(QueryLevels(query_level)) is object_level
    assert DICOMObjectLevels.from_query_level(query_level) is object_level
    assert QueryLevels.from_object_level(object_level) is QueryLevels(query_level)
    assert QueryLevels.from_object_level(int(object_level)) is QueryLevels(query_level)


def test_query_level_is_a_string() -> None:
    assert QueryLevels.SERIES == "SERIES"
    assert str(QueryLevels.INSTANCE) == "INSTANCE"


@pytest.mark.parametrize("bad", ["PATIENT", "study", ""])
def test_unknown_query_level_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        DICOMObjectLevels.from_query_level(bad)


def test_unknown_object_level_is_refused() -> None:
    with pytest.raises(ValueError):
        QueryLevels.from_object_level(3)


# --------------------------------------------------------------------------- #
# references
# --------------------------------------------------------------------------- #


def test_references_are_frozen_and_hashable() -> None:
    refs = {
        StudyReference("1"),
        StudyReference(study_uid="1"),
        SeriesReference("1", "1.1"),
        SeriesReference("1", "1.1"),
        InstanceReference("1", "1.1", "1.1.1"),
        InstanceReference("1", "1.1", "1.1.1"),
    }
    assert len(refs) == 3
    ref = InstanceReference("1", "1.1", "1.1.1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.instance_uid = "2"  # type: ignore[misc]


def test_references_of_different_levels_differ() -> None:
    study: object = StudyReference("1")
    assert study != SeriesReference("1", "1.1")
    assert SeriesReference("1", "1.1") != SeriesReference("1", "1.2")


def test_reference_levels_and_str() -> None:
    study = StudyReference("1")
    series = SeriesReference("1", "1.1")
    instance = InstanceReference("1", "1.1", "1.1.1")
    assert (study.level, series.level, instance.level) == (STUDY, SERIES, INSTANCE)
    assert str(study) == "StudyReference 1"
    assert str(series) == "SeriesReference 1 -> 1.1"
    assert str(instance) == "InstanceReference 1 -> 1.1 -> 1.1.1"
    assert instance.reference() is instance
    assert instance.uids() == ("1", "1.1", "1.1.1")


@pytest.mark.parametrize(
    ("ref", "allowed"),
    [
        (StudyReference("1"), [STUDY]),
        (SeriesReference("1", "1.1"), [STUDY, SERIES]),
        (InstanceReference("1", "1.1", "1.1.1"), [STUDY, SERIES, INSTANCE]),
    ],
)
def test_reference_contains_itself_at_its_level_or_higher(
    ref: StudyReference, allowed: list[DICOMObjectLevels]
) -> None:
    for level in (STUDY, SERIES, INSTANCE):
        if level in allowed:
            assert ref.contained_references(level) == (ref,)
        else:
            with pytest.raises(NoReferencesFoundError) as info:
                ref.contained_references(level)
            assert info.value.uids == ref.uids()


# --------------------------------------------------------------------------- #
# tree navigation
# --------------------------------------------------------------------------- #


def test_study_get_and_getitem(study: Study) -> None:
    assert study.get("1.2").uid == "1.2"
    assert study["1.1"] is study.get("1.1")
    assert study["1.1"]["1.1.2"].uid == "1.1.2"
    assert study["1.1"].get("1.1.1").uid == "1.1.1"


def test_missing_children_raise_key_error(study: Study) -> None:
    with pytest.raises(KeyError, match=r"9\.9"):
        study["9.9"]
    with pytest.raises(KeyError):
        study.get("1.1.1")  # an instance UID is not a series UID
    with pytest.raises(KeyError, match=r"1\.2\.1"):
        study["1.1"]["1.2.1"]


def test_all_instances_and_all_series(study: Study) -> None:
    assert [i.uid for i in study.all_instances()] == ["1.1.1", "1.1.2", "1.2.1"]
    assert [s.uid for s in study.all_series()] == ["1.1", "1.2"]
    series = study["1.1"]
    assert [i.uid for i in series.all_instances()] == ["1.1.1", "1.1.2"]
    assert series.all_series() == [series]
    instance = series["1.1.2"]
    assert instance.all_instances() == [instance]
    assert instance.all_series() == [series]


def test_parents_children_and_root(study: Study) -> None:
    series = study["1.2"]
    instance = series["1.2.1"]
    assert instance.parent is series
    assert series.parent is study
    assert instance.root() is study
    assert series.root() is study
    assert study.root() is study
    assert list(study.children()) == list(study.series)
    assert list(series.children()) == [instance]
    assert list(instance.children()) == []


def test_references_of_objects(study: Study) -> None:
    assert study.reference() == StudyReference("1")
    assert study["1.2"].reference() == SeriesReference("1", "1.2")
    assert study["1.2"]["1.2.1"].reference() == InstanceReference("1", "1.2", "1.2.1")


def test_max_object_depth(make_study: StudyFactory) -> None:
    assert make_study("1").max_object_depth() is STUDY
    series_only = make_study("1", {"1.1": None, "1.2": None})
    assert series_only.max_object_depth() is SERIES
    assert series_only["1.1"].max_object_depth() is SERIES
    full = make_study("1", {"1.1": ["1.1.1"]})
    assert full.max_object_depth() is INSTANCE
    assert full["1.1"].max_object_depth() is INSTANCE
    assert full["1.1"]["1.1.1"].max_object_depth() is INSTANCE


def test_max_object_depth_of_a_partly_known_study_is_the_shallowest(
    make_study: StudyFactory,
) -> None:
    """Only the first series has instances: the study is known to SERIES level."""
    mixed = make_study("1", {"1.1": ["1.1.1"], "1.2": None})
    assert mixed.max_object_depth() is SERIES
    with pytest.raises(NoReferencesFoundError):
        mixed.contained_references(INSTANCE)


def test_contained_references_of_a_full_study(study: Study) -> None:
    assert study.contained_references(STUDY) == (StudyReference("1"),)
    assert study.contained_references(SERIES) == (
        SeriesReference("1", "1.1"),
        SeriesReference("1", "1.2"),
    )
    assert study.contained_references(INSTANCE) == (
        InstanceReference("1", "1.1", "1.1.1"),
        InstanceReference("1", "1.1", "1.1.2"),
        InstanceReference("1", "1.2", "1.2.1"),
    )
    series = study["1.2"]
    assert series.contained_references(STUDY) == (SeriesReference("1", "1.2"),)
    assert series.contained_references(SERIES) == (SeriesReference("1", "1.2"),)
    assert series.contained_references(INSTANCE) == (
        InstanceReference("1", "1.2", "1.2.1"),
    )
    instance = series["1.2.1"]
    for level in (STUDY, SERIES, INSTANCE):
        assert instance.contained_references(level) == (instance.reference(),)


def test_contained_references_raise_when_the_level_is_unknown(
    make_study: StudyFactory,
) -> None:
    bare = make_study("1")
    with pytest.raises(NoReferencesFoundError) as info:
        bare.contained_references(SERIES)
    assert info.value.uids == ("1",)
    with pytest.raises(NoReferencesFoundError):
        bare.contained_references(INSTANCE)
    series_only = make_study("1", {"1.1": None})
    assert series_only.contained_references(SERIES) == (SeriesReference("1", "1.1"),)
    with pytest.raises(NoReferencesFoundError) as info:
        series_only["1.1"].contained_references(INSTANCE)
    assert info.value.uids == ("1", "1.1")


def test_str_and_repr_do_not_recurse(study: Study) -> None:
    assert str(study) == "Study 1"
    assert str(study["1.1"]) == "Series 1.1"
    assert str(study["1.1"]["1.1.1"]) == "Instance 1.1.1"
    for obj in (study, study["1.1"], study["1.1"]["1.1.1"]):
        text = repr(obj)
        assert obj.uid in text
        assert len(text) < 100


def test_equality_compares_uid_data_and_children(make_study: StudyFactory) -> None:
    one = make_study("1", {"1.1": ["1.1.1"]})
    same = make_study("1", {"1.1": ["1.1.1"]})
    assert one == same
    assert one["1.1"] == same["1.1"]
    assert one["1.1"]["1.1.1"] == same["1.1"]["1.1.1"]
    assert one != make_study("2", {"1.1": ["1.1.1"]})
    assert one != make_study("1", {"1.1": ["1.1.2"]})
    assert one != make_study("1", {"1.1": ["1.1.1"], "1.2": None})
    other_data = make_study("1", {"1.1": ["1.1.1"]})
    other_data.data.PatientID = "someone else"
    assert one != other_data
    assert one != one["1.1"]
    assert one != "1"


# --------------------------------------------------------------------------- #
# to_*_refs
# --------------------------------------------------------------------------- #


def test_to_instance_refs_expands_objects(study: Study) -> None:
    ref = InstanceReference("9", "9.1", "9.1.1")
    refs = to_instance_refs([study["1.2"], ref, study["1.1"]["1.1.1"]])
    assert refs == [
        InstanceReference("1", "1.2", "1.2.1"),
        ref,
        InstanceReference("1", "1.1", "1.1.1"),
    ]


@pytest.mark.parametrize(
    ("obj", "uids"),
    [
        (StudyReference("7"), ("7",)),
        (SeriesReference("7", "7.1"), ("7", "7.1")),
    ],
)
def test_to_instance_refs_names_what_needs_instances(
    obj: DICOMDownloadable, uids: tuple[str, ...]
) -> None:
    with pytest.raises(NonInstanceParameterError) as info:
        to_instance_refs([InstanceReference("1", "1.1", "1.1.1"), obj])
    assert info.value.uids == uids
    assert uids[-1] in str(info.value)
    assert isinstance(info.value.__cause__, NoReferencesFoundError)


def test_to_instance_refs_refuses_a_series_without_instances(
    make_study: StudyFactory,
) -> None:
    study = make_study("5", {"5.1": None})
    with pytest.raises(NonInstanceParameterError) as info:
        to_instance_refs([study])
    assert "5" in info.value.uids
    with pytest.raises(NonInstanceParameterError) as info:
        to_instance_refs([study["5.1"]])
    assert info.value.uids == ("5", "5.1")


def test_to_series_level_refs(study: Study, make_study: StudyFactory) -> None:
    instance = InstanceReference("1", "1.1", "1.1.1")
    assert to_series_level_refs([study, instance]) == [
        SeriesReference("1", "1.1"),
        SeriesReference("1", "1.2"),
        instance,
    ]
    with pytest.raises(NonSeriesParameterError) as info:
        to_series_level_refs([StudyReference("8")])
    assert info.value.uids == ("8",)
    with pytest.raises(NonSeriesParameterError) as info:
        to_series_level_refs([make_study("3")])
    assert info.value.uids == ("3",)


def test_to_references_at_study_level_keeps_everything(study: Study) -> None:
    assert to_references([study, StudyReference("2")], STUDY) == [
        StudyReference("1"),
        StudyReference("2"),
    ]


# --------------------------------------------------------------------------- #
# Searcher and Downloader bases
# --------------------------------------------------------------------------- #


class ListSearcher(Searcher):
    def __init__(self, studies: Sequence[Study]) -> None:
        self.studies = list(studies)
        self.queries: list[Query] = []

    def find_studies(self, query: Query) -> Sequence[Study]:
        self.queries.append(query)
        return self.studies


def test_find_study_needs_exactly_one(make_study: StudyFactory) -> None:
    one = make_study("1")
    assert ListSearcher([one]).find_study(Query()) is one
    with pytest.raises(DICOMTrolleyError, match="none"):
        ListSearcher([]).find_study(Query(PatientID="x"))
    with pytest.raises(DICOMTrolleyError, match="found 2"):
        ListSearcher([one, make_study("2")]).find_study(Query())


def test_find_study_by_id_builds_the_query(make_study: StudyFactory) -> None:
    searcher = ListSearcher([make_study("1")])
    searcher.find_study_by_id("1", query_level=QueryLevels.SERIES)
    (query,) = searcher.queries
    assert query.StudyInstanceUID == "1"
    assert query.query_level is QueryLevels.SERIES
    searcher.find_study_by_id("1")
    assert searcher.queries[-1].query_level is QueryLevels.STUDY


class ListDownloader(Downloader):
    def __init__(self, count: int) -> None:
        self.count = count

    def datasets(self, objects: Sequence[DICOMDownloadable]) -> Iterator[Dataset]:
        for index in range(self.count):
            ds = Dataset()
            ds.InstanceNumber = index
            yield ds


def test_default_get_dataset_uses_datasets() -> None:
    ref = InstanceReference("1", "1.1", "1.1.1")
    assert ListDownloader(1).get_dataset(ref).InstanceNumber == 0
    with pytest.raises(DICOMTrolleyError, match="got 2") as info:
        ListDownloader(2).get_dataset(ref)
    assert info.value.uids == ("1.1.1",)


def test_abstract_methods_raise() -> None:
    with pytest.raises(NotImplementedError):
        Searcher().find_studies(Query())
    with pytest.raises(NotImplementedError):
        list(Downloader().datasets([]))
    with pytest.raises(NotImplementedError):
        DICOMDownloadable().reference()


def test_instance_count_of_a_search_answer() -> None:
    from pydicom.dataset import Dataset

    from dicomtrolley.core import instance_count

    def answer(**values: object) -> Dataset:
        data = Dataset()
        for keyword, value in values.items():
            setattr(data, keyword, value)
        return data

    assert instance_count(answer(NumberOfStudyRelatedInstances="12")) == 12
    assert instance_count(answer()) is None
    assert instance_count(answer(NumberOfStudyRelatedInstances="")) is None
    series = answer(NumberOfSeriesRelatedInstances=3)
    assert instance_count(series, "NumberOfSeriesRelatedInstances") == 3
    # what a lenient parse of a bad IS value leaves (pydicom keeps the text)
    assert instance_count({"NumberOfStudyRelatedInstances": "abc"}) is None
