"""Flat search results into the study tree (DICOMParseTree) and look-ups in it."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicomtrolley.core import (
    DICOMObjectLevels,
    InstanceReference,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.datastructures import TreeNode
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.parsing import (
    DICOMObjectNotFound,
    DICOMObjectTree,
    DICOMParseTree,
    flatten,
    studies_from_datasets,
)
from tests.conftest import StudyFactory


def result(
    study: str | None = None,
    series: str | None = None,
    instance: str | None = None,
    **keywords: object,
) -> Dataset:
    """A search result dataset with these UIDs and attributes."""
    ds = Dataset()
    if study is not None:
        ds.StudyInstanceUID = study
    if series is not None:
        ds.SeriesInstanceUID = series
    if instance is not None:
        ds.SOPInstanceUID = instance
    for keyword, value in keywords.items():
        setattr(ds, keyword, value)
    return ds


# --------------------------------------------------------------------------- #
# DICOMParseTree.insert / insert_dataset
# --------------------------------------------------------------------------- #


def test_insert_dataset_places_by_uids() -> None:
    tree = DICOMParseTree()
    tree.insert_dataset(result("1", PatientID="P"))
    tree.insert_dataset(result("1", "1.1", Modality="CT"))
    tree.insert_dataset(result("1", "1.1", "1.1.1", InstanceNumber=1))
    (study,) = tree.as_studies()
    assert study.uid == "1"
    assert study.data.PatientID == "P"
    assert study["1.1"].data.Modality == "CT"
    assert study["1.1"]["1.1.1"].data.InstanceNumber == 1


def test_insert_dataset_without_study_uid_is_refused() -> None:
    tree = DICOMParseTree()
    with pytest.raises(DICOMTrolleyError, match="StudyInstanceUID"):
        tree.insert_dataset(result(series="1.1", instance="1.1.1"))
    with pytest.raises(DICOMTrolleyError):
        tree.insert_dataset(result(study=""))
    assert tree.as_studies() == []


def test_insert_dataset_without_series_uid_lands_at_study_level() -> None:
    tree = DICOMParseTree()
    tree.insert_dataset(result("1", instance="1.1.1", PatientID="P"))
    (study,) = tree.as_studies()
    assert study.series == []
    assert study.data.PatientID == "P"


def test_insert_instance_without_series_is_refused() -> None:
    tree = DICOMParseTree()
    with pytest.raises(DICOMTrolleyError) as info:
        tree.insert(Dataset(), study_uid="1", instance_uid="1.1.1")
    assert info.value.uids == ("1", "1.1.1")


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_insert_dataset_strips_uid_padding() -> None:
    tree = DICOMParseTree()
    tree.insert_dataset(result("1.2 ", "1.2.3 ", "1.2.3.4"))
    (study,) = tree.as_studies()
    assert study.uid == "1.2"
    assert study.series[0].uid == "1.2.3"


def test_overwrite_is_refused_by_default() -> None:
    tree = DICOMParseTree()
    tree.insert_dataset(result("1", "1.1", PatientID="A"))
    with pytest.raises(DICOMTrolleyError, match="already") as info:
        tree.insert_dataset(result("1", "1.1", PatientID="B"))
    assert info.value.uids == ("1", "1.1")
    assert tree.as_studies()[0]["1.1"].data.PatientID == "A"


def test_empty_data_may_always_be_replaced() -> None:
    tree = DICOMParseTree()
    tree.insert(Dataset(), "1")
    tree.insert(result("1", PatientID="A"), "1")
    assert tree.as_studies()[0].data.PatientID == "A"


def test_overwrite_when_allowed_last_wins() -> None:
    tree = DICOMParseTree(allow_overwrite=True)
    tree.insert_dataset(result("1", "1.1", "1.1.1", PatientID="A"))
    tree.insert_dataset(result("1", "1.1", "1.1.1", PatientID="B"))
    assert tree.as_studies()[0]["1.1"]["1.1.1"].data.PatientID == "B"


def test_insert_dicom_object_refuses_other_types() -> None:
    with pytest.raises(DICOMTrolleyError, match="Unknown"):
        DICOMParseTree().insert_dicom_object("1.2.3")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# as_studies
# --------------------------------------------------------------------------- #


def test_as_studies_keeps_insertion_order_and_links() -> None:
    tree = DICOMParseTree()
    for study, series, instance in [
        ("2", "2.2", "2.2.2"),
        ("1", "1.9", "1.9.1"),
        ("2", "2.1", "2.1.1"),
        ("2", "2.2", "2.2.1"),
        ("1", "1.1", "1.1.1"),
    ]:
        tree.insert_dataset(result(study, series, instance))
    studies = tree.as_studies()
    assert [s.uid for s in studies] == ["2", "1"]
    assert [s.uid for s in studies[0].series] == ["2.2", "2.1"]
    assert [i.uid for i in studies[0]["2.2"].instances] == ["2.2.2", "2.2.1"]
    for one in studies:
        for one_series in one.series:
            assert one_series.parent is one
            for one_instance in one_series.instances:
                assert one_instance.parent is one_series
                assert one_instance.root() is one


def test_parents_get_study_and_series_attributes_of_their_first_child() -> None:
    first = result(
        "1",
        "1.1",
        "1.1.1",
        PatientID="P1",
        PatientName="Doe^Jane",
        StudyDate="20200101",
        AccessionNumber="ACC",
        Modality="CT",
        SeriesDescription="Axial",
        SOPClassUID="1.2.840.10008.5.1.4.1.1.2",
        InstanceNumber=1,
        Rows=512,
    )
    second = result("1", "1.1", "1.1.2", PatientID="other", Modality="MR")
    tree = DICOMParseTree()
    tree.insert_dataset(first)
    tree.insert_dataset(second)
    (study,) = tree.as_studies()
    series = study["1.1"]
    # study level: patient and study attributes of the first instance only
    assert study.data.PatientID == "P1"
    assert study.data.PatientName == "Doe^Jane"
    assert study.data.StudyDate == "20200101"
    assert study.data.AccessionNumber == "ACC"
    assert study.data.StudyInstanceUID == "1"
    for keyword in ("Modality", "SeriesDescription", "SOPInstanceUID", "Rows"):
        assert keyword not in study.data
    # series level: series attributes only
    assert series.data.Modality == "CT"
    assert series.data.SeriesDescription == "Axial"
    assert series.data.SeriesInstanceUID == "1.1"
    for keyword in ("PatientID", "SOPInstanceUID", "InstanceNumber", "Rows"):
        assert keyword not in series.data
    # instances keep everything
    assert series["1.1.1"].data is first
    assert series["1.1.2"].data is second


def test_study_attributes_come_from_a_series_result() -> None:
    tree = DICOMParseTree()
    tree.insert_dataset(result("1", "1.1", PatientID="P", Modality="CT"))
    (study,) = tree.as_studies()
    assert study.data.PatientID == "P"
    assert "Modality" not in study.data
    assert study["1.1"].data.Modality == "CT"  # own data, unchanged


def test_own_data_wins_over_children() -> None:
    tree = DICOMParseTree()
    tree.insert_dataset(result("1", PatientID="STUDY"))
    tree.insert_dataset(result("1", "1.1", "1.1.1", PatientID="INSTANCE"))
    assert tree.as_studies()[0].data.PatientID == "STUDY"


def test_parent_data_is_a_copy() -> None:
    """Changing the study's data must not change the instance it came from."""
    source = result("1", "1.1", "1.1.1", PatientID="P", Modality="CT")
    tree = DICOMParseTree()
    tree.insert_dataset(source)
    (study,) = tree.as_studies()
    study.data.PatientID = "changed"
    study["1.1"].data.Modality = "MR"
    assert source.PatientID == "P"
    assert source.Modality == "CT"


def test_nodes_without_data_get_empty_datasets() -> None:
    tree = DICOMParseTree()
    tree.insert(Dataset(), "1", "1.1", "1.1.1")
    (study,) = tree.as_studies()
    assert study.data == Dataset()
    assert study["1.1"].data == Dataset()
    assert study["1.1"]["1.1.1"].data == Dataset()


def test_studies_from_10000_instance_results() -> None:
    datasets = [
        result(
            f"1.{s}",
            f"1.{s}.{se}",
            f"1.{s}.{se}.{i}",
            PatientID=f"P{s}",
            Modality="CT",
        )
        for s in range(10)
        for se in range(10)
        for i in range(100)
    ]
    studies = studies_from_datasets(datasets)
    assert len(studies) == 10
    assert [s.uid for s in studies] == [f"1.{s}" for s in range(10)]
    assert all(len(study.series) == 10 for study in studies)
    assert sum(len(study.all_instances()) for study in studies) == 10_000
    assert studies[3].data.PatientID == "P3"
    assert studies[3]["1.3.7"]["1.3.7.42"].data is datasets[3 * 1000 + 7 * 100 + 42]


def test_studies_from_datasets_allows_duplicates() -> None:
    studies = studies_from_datasets([result("1", "1.1", "1.1.1", InstanceNumber=1)] * 2)
    assert len(studies[0].all_instances()) == 1


# --------------------------------------------------------------------------- #
# init_from_objects, flatten, DICOMObjectTree
# --------------------------------------------------------------------------- #


def test_flatten_is_depth_first(make_study: StudyFactory) -> None:
    study = make_study("1", {"1.1": ["1.1.1", "1.1.2"], "1.2": ["1.2.1"]})
    assert [obj.uid for obj in flatten(study)] == [
        "1",
        "1.1",
        "1.1.1",
        "1.1.2",
        "1.2",
        "1.2.1",
    ]


def test_tree_from_a_lone_instance_builds_its_parents(
    make_study: StudyFactory,
) -> None:
    instance = make_study("1", {"1.1": ["1.1.1"]})["1.1"]["1.1.1"]
    (study,) = DICOMParseTree.init_from_objects([instance]).as_studies()
    assert study.uid == "1"
    assert study["1.1"]["1.1.1"].data == instance.data


@pytest.fixture
def object_tree(make_study: StudyFactory) -> DICOMObjectTree:
    return DICOMObjectTree(
        [
            make_study("1", {"1.1": ["1.1.1"], "1.2": None}),
            make_study("2"),
        ]
    )


def test_object_tree_retrieve(object_tree: DICOMObjectTree) -> None:
    study = object_tree.retrieve(StudyReference("1"))
    assert isinstance(study, Study)
    assert study.uid == "1"
    assert object_tree.retrieve(SeriesReference("1", "1.2")).uid == "1.2"
    instance = object_tree.retrieve(InstanceReference("1", "1.1", "1.1.1"))
    assert instance.uid == "1.1.1"
    assert instance.max_object_depth() is DICOMObjectLevels.INSTANCE
    assert [s.uid for s in object_tree.studies] == ["1", "2"]
    assert object_tree["2"].uid == "2"


@pytest.mark.parametrize(
    "ref",
    [
        StudyReference("3"),
        SeriesReference("1", "1.3"),
        SeriesReference("2", "1.1"),
        InstanceReference("1", "1.1", "1.1.2"),
        InstanceReference("1", "1.2", "1.1.1"),
    ],
)
def test_object_tree_retrieve_missing(
    object_tree: DICOMObjectTree, ref: StudyReference
) -> None:
    with pytest.raises(DICOMObjectNotFound) as info:
        object_tree.retrieve(ref)
    assert str(ref) in str(info.value)
    assert isinstance(info.value, DICOMTrolleyError)


def test_object_tree_add_study_replaces(
    object_tree: DICOMObjectTree, make_study: StudyFactory
) -> None:
    replacement = make_study("2", {"2.1": None})
    object_tree.add_study(replacement)
    assert object_tree["2"] is replacement
    assert len(object_tree.studies) == 2
    with pytest.raises(KeyError):
        object_tree["9"]


def test_insert_dicom_object_keeps_the_4_1_0_name_and_warns_on_obj() -> None:
    study = Study(uid="1", data=Dataset(), series=[])
    tree = DICOMParseTree()
    tree.insert_dicom_object(dicom_object=study)
    assert [s.uid for s in tree.as_studies()] == ["1"]
    again = DICOMParseTree()
    with pytest.warns(DeprecationWarning, match="dicom_object"):
        again.insert_dicom_object(obj=study)
    assert [s.uid for s in again.as_studies()] == ["1"]


def test_root_is_a_tree_node_and_as_study_takes_its_items() -> None:
    tree = DICOMParseTree()
    tree.insert(Dataset(), "1", "1.1", "1.1.1")
    assert isinstance(tree.root, TreeNode)
    assert tree.root.exists(("1", "1.1", "1.1.1"))
    study = DICOMParseTree.as_study(next(iter(tree.root.items())))
    assert [i.uid for i in study.all_instances()] == ["1.1.1"]
