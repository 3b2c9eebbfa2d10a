"""Deterministic synthetic DICOM studies: demo data, test fixtures and benchmarks.

Everything here is reproducible: UIDs are derived from fixed strings under
pydicom's UID root, pixel data comes from a generator seeded per instance, and no
clock is read. Writing the same studies twice gives byte-identical files (with the
same pydicom version).

The demo set (:func:`default_studies`) covers what a DICOM client must cope with:
several patients, CT and MR, several series per study, a multi-frame instance,
non-ASCII and ideographic patient names (``ISO_IR 192``), Explicit VR Little Endian,
Implicit VR Little Endian and RLE Lossless instances, and different study dates.

:func:`write_studies` writes PS3.10 files as
``<out_dir>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``;
:func:`large_study` writes one big study (for download benchmarks) quickly.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_ROOT_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    RLELossless,
    generate_uid,
)

from dicomtrolley.exceptions import StorageError

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "InstanceSpec",
    "SeriesSpec",
    "StudySpec",
    "cohort_studies",
    "default_studies",
    "instance_specs",
    "large_study",
    "make_dataset",
    "phi_studies",
    "synthetic_uid",
    "write_dataset",
    "write_studies",
]

#: Salt for every derived UID, so that synthetic UIDs never collide with other
#: users of pydicom's UID root who derive theirs from similar strings.
_UID_SALT = "dicomtrolley-synthetic-v1"


def synthetic_uid(*parts: str) -> str:
    """A UID under pydicom's root derived only from ``parts``: same parts, same UID."""
    return generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=[_UID_SALT, *parts])


#: ImplementationClassUID written into every file meta header (fixed, so bytes do
#: not change when pydicom is upgraded).
IMPLEMENTATION_CLASS_UID = synthetic_uid("implementation")
IMPLEMENTATION_VERSION_NAME = "DTROLLEY_SYNTH1"

#: Transfer syntaxes :func:`make_dataset` can write.
SUPPORTED_TRANSFER_SYNTAXES = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless}
)

_SOP_CLASS_BY_MODALITY = {"CT": CTImageStorage, "MR": MRImageStorage}


@dataclass(frozen=True)
class SeriesSpec:
    """One series of a synthetic study.

    ``sop_class_uid`` defaults to CT or MR Image Storage after the modality, and to
    Multi-frame Grayscale Word Secondary Capture when ``frames`` > 1.
    """

    series_uid: str
    series_number: int
    modality: str
    description: str
    instance_count: int
    transfer_syntax: str = ExplicitVRLittleEndian
    frames: int = 1
    rows: int = 64
    columns: int = 64
    body_part: str = ""
    sop_class_uid: str = ""
    #: BurnedInAnnotation of its instances ("YES", "NO"; "" leaves it out).
    burned_in: str = ""

    def __post_init__(self) -> None:
        if self.transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
            raise ValueError(f"unsupported transfer syntax {self.transfer_syntax}")
        if self.instance_count < 1 or self.frames < 1:
            raise ValueError("a series needs at least one instance of one frame")
        if self.rows < 1 or self.columns < 1:
            raise ValueError("rows and columns must be positive")

    @property
    def sop_class(self) -> str:
        """The SOP Class UID of the instances of this series."""
        if self.sop_class_uid:
            return self.sop_class_uid
        if self.frames > 1:
            return str(MultiFrameGrayscaleWordSecondaryCaptureImageStorage)
        return str(_SOP_CLASS_BY_MODALITY.get(self.modality, CTImageStorage))

    def instance_uid(self, index: int) -> str:
        """SOP Instance UID of the instance at ``index`` (0-based)."""
        return synthetic_uid("instance", self.series_uid, str(index))


@dataclass(frozen=True)
class StudySpec:
    """One synthetic study of one patient.

    Dates are ``YYYYMMDD``, times ``HHMMSS``. ``specific_character_set`` is
    written when not empty (use ``"ISO_IR 192"`` for non-ASCII names).
    """

    patient_id: str
    patient_name: str
    study_uid: str
    description: str
    series: tuple[SeriesSpec, ...]
    study_date: str = "20200101"
    study_time: str = "120000"
    accession_number: str = ""
    study_id: str = "1"
    patient_birth_date: str = ""
    patient_sex: str = "O"
    specific_character_set: str = ""
    institution_name: str = "Trolley General Hospital"
    department: str = "Radiology"
    referring_physician: str = "Referrer^Rita"
    #: Give every instance each attribute of PS3.15 Table E.1-1 (with a value
    #: that contains ``PHI``), a private block and references to the series'
    #: first instance: data for de-identification tests (needs the deid extra).
    phi: bool = False

    def __post_init__(self) -> None:
        if not self.series:
            raise ValueError("a study needs at least one series")

    @property
    def modalities(self) -> tuple[str, ...]:
        """Distinct modalities of the series, sorted (what ModalitiesInStudy holds)."""
        return tuple(sorted({series.modality for series in self.series}))

    @property
    def modality(self) -> str:
        """The modality of the first series: the main modality of the study."""
        return self.series[0].modality

    @property
    def instance_count(self) -> int:
        """Number of instances in all series."""
        return sum(series.instance_count for series in self.series)


@dataclass(frozen=True)
class InstanceSpec:
    """One instance to generate: its study, series and position in the series."""

    study: StudySpec
    series: SeriesSpec
    index: int
    sop_instance_uid: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "sop_instance_uid", self.series.instance_uid(self.index)
        )

    @property
    def relative_path(self) -> Path:
        """``<PatientID>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm``."""
        return (
            Path(self.study.patient_id)
            / self.study.study_uid
            / self.series.series_uid
            / f"{self.sop_instance_uid}.dcm"
        )


def _study(
    key: str,
    *,
    patient_id: str,
    patient_name: str,
    description: str,
    series: Iterable[tuple[str, str, int, str, int]],
    body_part: str,
    **kwargs: Any,
) -> StudySpec:
    """A StudySpec whose UIDs derive from ``key``.

    ``series`` items: (modality, description, instance count, transfer syntax,
    frames per instance).
    """
    study_uid = synthetic_uid("study", key)
    series_specs = tuple(
        SeriesSpec(
            series_uid=synthetic_uid("series", key, str(number)),
            series_number=number,
            modality=modality,
            description=series_description,
            instance_count=count,
            transfer_syntax=syntax,
            frames=frames,
            body_part=body_part,
        )
        for number, (modality, series_description, count, syntax, frames) in enumerate(
            series, start=1
        )
    )
    return StudySpec(
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=study_uid,
        description=description,
        series=series_specs,
        **kwargs,
    )


def default_studies() -> list[StudySpec]:
    """The demo set: 5 studies of 4 patients, 105 instances (one with 8 frames).

    ====== ========================= ===== ======== ========================
    ID     Patient                   Study Date     Series (transfer syntax)
    ====== ========================= ===== ======== ========================
    DTR001 Doe^John                  CT    20210315 20 explicit, 2 implicit,
                                                    1 x 8-frame SC (OT) expl.
    DTR001 Doe^John                  MR    20231105 8 explicit, 8 RLE
    DTR002 Müller^Jürgen (UTF-8)     MR    20220701 16 explicit, 16 RLE
    DTR003 Yamada^Tarou=山田^太郎=... CT    20230120 12 implicit, 10 RLE
    DTR004 Smith^Anna                CT    20240229 6 explicit, 6 implicit
    ====== ========================= ===== ======== ========================
    """
    explicit, implicit, rle = (
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        RLELossless,
    )
    return [
        _study(
            "doe-ct",
            patient_id="DTR001",
            patient_name="Doe^John",
            description="CT Chest",
            body_part="CHEST",
            series=[
                ("CT", "Axial 5mm", 20, explicit, 1),
                ("CT", "Scout", 2, implicit, 1),
                ("OT", "Cine capture", 1, explicit, 8),
            ],
            study_date="20210315",
            study_time="093000",
            accession_number="ACC0001",
            study_id="1001",
            patient_birth_date="19700101",
            patient_sex="M",
        ),
        _study(
            "doe-mr",
            patient_id="DTR001",
            patient_name="Doe^John",
            description="MR Knee",
            body_part="KNEE",
            series=[
                ("MR", "T1 sag", 8, explicit, 1),
                ("MR", "PD cor", 8, rle, 1),
            ],
            study_date="20231105",
            study_time="141500",
            accession_number="ACC0002",
            study_id="1002",
            patient_birth_date="19700101",
            patient_sex="M",
            department="MSK",
        ),
        _study(
            "mueller-mr",
            patient_id="DTR002",
            patient_name="Müller^Jürgen",
            description="MR Schädel",
            body_part="HEAD",
            series=[
                ("MR", "T1 axial", 16, explicit, 1),
                ("MR", "T2 axial", 16, rle, 1),
            ],
            study_date="20220701",
            study_time="080000",
            accession_number="ACC0003",
            study_id="2001",
            patient_birth_date="19651224",
            patient_sex="M",
            specific_character_set="ISO_IR 192",
            institution_name="Klinikum Süd",
            department="Neuroradiologie",
            referring_physician="Schäfer^Björn",
        ),
        _study(
            "yamada-ct",
            patient_id="DTR003",
            patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう",
            description="CT Abdomen",
            body_part="ABDOMEN",
            series=[
                ("CT", "Abdomen 3mm", 12, implicit, 1),
                ("CT", "Abdomen 1mm", 10, rle, 1),
            ],
            study_date="20230120",
            study_time="110000",
            accession_number="ACC0004",
            study_id="3001",
            patient_birth_date="19800505",
            patient_sex="M",
            specific_character_set="ISO_IR 192",
        ),
        _study(
            "smith-ct",
            patient_id="DTR004",
            patient_name="Smith^Anna",
            description="CT Head",
            body_part="HEAD",
            series=[
                ("CT", "Head soft tissue", 6, explicit, 1),
                ("CT", "Head bone", 6, implicit, 1),
            ],
            study_date="20240229",
            study_time="235959",
            accession_number="ACC0005",
            study_id="4001",
            patient_birth_date="19921111",
            patient_sex="F",
        ),
    ]


def cohort_studies(
    count: int, instances: int = 1, size: int = 16, key: str = "cohort"
) -> list[StudySpec]:
    """count small one-series CT studies, as a cohort pull has them.

    Study n (from 1) belongs to patient ``COH{n:05d}`` with accession number
    ``A{n:05d}``, dated in 2020 by n; each of its ``instances`` instances is
    size x size pixels. ``key`` makes other cohorts' UIDs differ.
    """
    studies = []
    for number in range(1, count + 1):
        name = f"{key}-{number}"
        studies.append(
            StudySpec(
                patient_id=f"COH{number:05d}",
                patient_name=f"Cohort^{number:05d}",
                study_uid=synthetic_uid("study", name),
                description="Cohort CT",
                series=(
                    SeriesSpec(
                        series_uid=synthetic_uid("series", name, "1"),
                        series_number=1,
                        modality="CT",
                        description="Axial",
                        instance_count=instances,
                        rows=size,
                        columns=size,
                    ),
                ),
                study_date=f"2020{1 + number % 12:02d}{1 + number % 28:02d}",
                accession_number=f"A{number:05d}",
            )
        )
    return studies


def phi_studies(
    count: int = 2, instances: int = 2, key: str = "phi"
) -> list[StudySpec]:
    """count studies (one patient each) carrying every PS3.15 Table E.1-1
    attribute, private attributes and burned-in annotation cases.

    Each study has a CT series with BurnedInAnnotation YES, one with NO, and
    an ultrasound series without the attribute (both must be flagged by
    de-identification), ``instances`` instances each.
    """
    studies = []
    for number in range(1, count + 1):
        name = f"{key}-{number}"
        cases = (
            ("CT", "Burned in", "YES", ""),
            ("CT", "Clean", "NO", ""),
            ("US", "Ultrasound", "", "1.2.840.10008.5.1.4.1.1.6.1"),
        )
        series = tuple(
            SeriesSpec(
                series_uid=synthetic_uid("series", name, str(index)),
                series_number=index,
                modality=modality,
                description=description,
                instance_count=instances,
                rows=8,
                columns=8,
                burned_in=burned_in,
                sop_class_uid=sop_class,
            )
            for index, (modality, description, burned_in, sop_class) in enumerate(
                cases, start=1
            )
        )
        studies.append(
            StudySpec(
                patient_id=f"PHIPAT{number:04d}",
                patient_name=f"Identifiable^Person{number}",
                study_uid=synthetic_uid("study", name),
                description="PHI study",
                series=series,
                study_date=f"1999{number % 12 + 1:02d}15",
                accession_number=f"PHIACC{number:04d}",
                patient_birth_date="19500101",
                phi=True,
            )
        )
    return studies


def instance_specs(studies: Iterable[StudySpec]) -> Iterator[InstanceSpec]:
    """Every instance of ``studies``, in order."""
    for study in studies:
        for series in study.series:
            for index in range(series.instance_count):
                yield InstanceSpec(study, series, index)


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("ascii")).digest()[:8], "little")


@lru_cache(maxsize=16)
def _radius_map(rows: int, columns: int) -> npt.NDArray[np.float64]:
    """Squared normalised distance from the image centre (1.0 at the border)."""
    y = np.linspace(-1.0, 1.0, rows)[:, None]
    x = np.linspace(-1.0, 1.0, columns)[None, :]
    result: npt.NDArray[np.float64] = x * x + (1.3 * y) ** 2
    return result


def _pixels(instance: InstanceSpec) -> npt.NDArray[np.uint16]:
    """Phantom-like 12-bit pixels, (frames, rows, columns), seeded by the SOP UID."""
    series = instance.series
    rng = np.random.default_rng(_seed(instance.sop_instance_uid))
    radius = _radius_map(series.rows, series.columns)
    frames = np.empty((series.frames, series.rows, series.columns), dtype=np.uint16)
    for frame in range(series.frames):
        position = (instance.index + frame) / max(
            series.instance_count + series.frames, 2
        )
        body = radius < 0.8
        organ = radius < 0.15 + 0.2 * position
        image = np.where(body, 1024 + 40, 24).astype(np.int32)
        image[organ] += 300
        image += rng.integers(0, 48, size=image.shape, dtype=np.int32)
        frames[frame] = np.clip(image, 0, 4095).astype(np.uint16)
    return frames


def _file_meta(
    sop_class: str, sop_instance: str, transfer_syntax: str
) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _header(instance: InstanceSpec) -> Dataset:
    """Every attribute of the instance except pixel data and the file meta."""
    study, series, index = instance.study, instance.series, instance.index
    ds = Dataset()
    if study.specific_character_set:
        ds.SpecificCharacterSet = study.specific_character_set
    multi_frame = series.frames > 1
    ds.ImageType = ["DERIVED", "SECONDARY"] if multi_frame else ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = series.sop_class
    ds.SOPInstanceUID = instance.sop_instance_uid
    ds.StudyDate = study.study_date
    ds.SeriesDate = study.study_date
    ds.ContentDate = study.study_date
    ds.StudyTime = study.study_time
    ds.SeriesTime = study.study_time
    ds.ContentTime = study.study_time
    ds.AccessionNumber = study.accession_number
    ds.Modality = series.modality
    if multi_frame:
        ds.ConversionType = "WSD"
    ds.Manufacturer = "dicomtrolley"
    ds.InstitutionName = study.institution_name
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.InstitutionalDepartmentName = study.department
    ds.ManufacturerModelName = "synthetic"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    if series.body_part:
        ds.BodyPartExamined = series.body_part
    thickness = 5.0
    if series.modality == "CT" and not multi_frame:
        ds.SliceThickness = thickness
        ds.KVP = 120
    elif series.modality == "MR":
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = thickness
        ds.RepetitionTime = 500.0
        ds.EchoTime = 15.0
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 1.5
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.series_number
    ds.InstanceNumber = index + 1
    if not multi_frame:
        ds.ImagePositionPatient = [-160.0, -160.0, round(-thickness * index, 2)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.FrameOfReferenceUID = synthetic_uid("frame-of-reference", study.study_uid)
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = round(-thickness * index, 2)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if multi_frame:
        ds.NumberOfFrames = series.frames
        ds.FrameIncrementPointer = 0x00181063  # FrameTime
        ds.FrameTime = 100.0
    ds.Rows = series.rows
    ds.Columns = series.columns
    if not multi_frame:
        ds.PixelSpacing = [
            round(320.0 / series.rows, 4),
            round(320.0 / series.columns, 4),
        ]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if series.modality == "CT":
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
    else:
        ds.WindowCenter = 1200
        ds.WindowWidth = 800
    if multi_frame:
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
    if series.burned_in:
        ds.BurnedInAnnotation = series.burned_in
    if study.phi:
        _add_phi(ds, instance)
    return ds


#: A value per VR for the attributes of :func:`_add_phi` (text contains PHI).
_PHI_VALUES: dict[str, object] = {
    "DA": "19750315",
    "TM": "101112",
    "DT": "19750315101112",
    "AS": "042Y",
    "CS": "PHI",
    "AE": "PHIAE",
    "PN": "Phi^Patient",
    "IS": "7",
    "DS": "7.5",
    "US": 7,
    "SS": 7,
    "UL": 7,
    "SL": 7,
    "UV": 7,
    "SV": 7,
    "FL": 7.5,
    "FD": 7.5,
    "AT": 0x00100010,
    "UR": "urn:phi",
}
_PHI_BYTES = b"PHIBYTES"  # 8 bytes: a whole number of OF, OD, OL, OV values


def _phi_value(keyword: str, vr: str) -> object:
    if vr in _PHI_VALUES:
        return _PHI_VALUES[vr]
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return _PHI_BYTES
    text = f"PHI-{keyword}"
    return text[:16] if vr == "SH" else text[:64]


def _add_phi(ds: Dataset, instance: InstanceSpec) -> None:
    """Each attribute of PS3.15 Table E.1-1 not set yet, a private block, and
    image references to the first instance of the series."""
    from pydicom.datadict import dictionary_VR
    from pydicom.sequence import Sequence

    from dicomtrolley.deid_table import profile_rows

    first = instance.series.instance_uid(0)
    for row in profile_rows():
        if row.tag in ds or row.tag >> 16 in (0x0000, 0x0002):
            continue
        vr = str(dictionary_VR(row.tag)).split(" or ")[0]
        if vr == "SQ":
            item = Dataset()
            if "U" in row.basic:  # references: to the series' first instance
                item.ReferencedSOPClassUID = instance.series.sop_class
                item.ReferencedSOPInstanceUID = first
            else:
                item.CodeMeaning = f"PHI-{row.keyword}"[:64]
                item.PersonName = "Phi^Nested"
            ds.add_new(row.tag, "SQ", Sequence([item]))
        elif vr == "UI":
            ds.add_new(row.tag, vr, synthetic_uid("phi", row.keyword, first))
        else:
            ds.add_new(row.tag, vr, _phi_value(row.keyword, vr))
    block = ds.private_block(0x0009, "DICOMTROLLEY PHI", create=True)
    block.add_new(0x01, "LO", "PHI-private")
    block.add_new(0x02, "PN", "Private^Phi")


def make_dataset(instance: InstanceSpec) -> Dataset:
    """The complete dataset (with file meta) of one synthetic instance.

    Pixel data is encoded in the series' transfer syntax.
    """
    ds = _header(instance)
    syntax = instance.series.transfer_syntax
    pixels = _pixels(instance)
    if syntax == RLELossless:
        source = pixels if instance.series.frames > 1 else pixels[0]
        ds.compress(
            RLELossless, source, encoding_plugin="pydicom", generate_instance_uid=False
        )
    else:
        ds.add_new(0x7FE00010, "OW", pixels.astype("<u2").tobytes())
    ds.file_meta = _file_meta(ds.SOPClassUID, ds.SOPInstanceUID, syntax)
    return ds


def _atomic_write(path: Path, writer: Callable[[BinaryIO], None]) -> None:
    """Run ``writer`` on a temporary file next to ``path``, then move it into place.

    Raises StorageError (with the path) when anything fails; no temporary file is
    left behind.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}") from exc
    try:
        with os.fdopen(handle, "wb") as stream:
            writer(stream)
        os.replace(temporary, path)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise StorageError(f"cannot write {path}: {exc}") from exc


def write_dataset(path: Path, dataset: Dataset) -> None:
    """Write ``dataset`` (with its file meta) as a PS3.10 file, atomically."""

    def writer(stream: BinaryIO) -> None:
        dcmwrite(stream, dataset, enforce_file_format=True)

    _atomic_write(path, writer)


def write_studies(
    out_dir: Path, studies: Iterable[StudySpec] | None = None
) -> list[Path]:
    """Write ``studies`` (default: :func:`default_studies`) below ``out_dir``.

    Files go to ``<out_dir>/<PatientID>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm``;
    existing files are replaced. Returns the paths in study/series/instance order.
    Raises :class:`~dicomtrolley.exceptions.StorageError` when a file cannot be
    written.
    """
    out_dir = Path(out_dir)
    if studies is None:
        studies = default_studies()
    paths = []
    for instance in instance_specs(studies):
        path = out_dir / instance.relative_path
        try:
            dataset = make_dataset(instance)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise StorageError(f"cannot create {path}: {exc}") from exc
        write_dataset(path, dataset)
        paths.append(path)
    return paths


_LARGE_FRAME_LIMIT = 0xFFFFFFFE  # largest even 32-bit element length


def large_study(
    out_dir: Path,
    total_bytes: int,
    instance_bytes: int = 105 * 1024**2,
    *,
    rows: int = 512,
    columns: int = 512,
    patient_id: str = "DTR-LARGE",
    patient_name: str = "Large^Study",
    key: str = "large",
) -> list[Path]:
    """Write one study with one series of big multi-frame instances.

    The pixel data of all instances adds up to about ``total_bytes`` (rounded up
    to whole ``rows`` x ``columns`` 16-bit frames); each instance holds about
    ``instance_bytes`` of pixel data, the last one the remainder. Content is a
    cheap deterministic pattern, streamed to disk frame block by frame block, so a
    gigabyte takes about as long as the disk needs. Instances are Multi-frame
    Grayscale Word Secondary Capture in Explicit VR Little Endian. UIDs derive
    from ``key``: a different key gives a different study.

    Returns the paths, laid out as by :func:`write_studies`.
    """
    if total_bytes < 1 or instance_bytes < 1:
        raise ValueError("total_bytes and instance_bytes must be positive")
    frame_bytes = rows * columns * 2
    frames_per_instance = max(1, instance_bytes // frame_bytes)
    if frames_per_instance * frame_bytes > _LARGE_FRAME_LIMIT:
        raise ValueError("instance_bytes too large for one pixel data element")
    total_frames = max(1, math.ceil(total_bytes / frame_bytes))
    counts = [frames_per_instance] * (total_frames // frames_per_instance)
    if total_frames % frames_per_instance:
        counts.append(total_frames % frames_per_instance)

    series = SeriesSpec(
        series_uid=synthetic_uid("series", key, "1"),
        series_number=1,
        modality="OT",
        description=f"{len(counts)} x {frames_per_instance} frames",
        instance_count=len(counts),
        frames=max(2, frames_per_instance),
        rows=rows,
        columns=columns,
    )
    study = StudySpec(
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=synthetic_uid("study", key),
        description="Large study",
        series=(series,),
        study_date="20200202",
        study_time="020202",
        accession_number="ACCLARGE",
    )
    tile = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 7) % 4096
    base = np.tile(tile, (math.ceil(rows / 64), math.ceil(columns / 64)))
    base = base[:rows, :columns].astype(np.uint16)
    # 16 consecutive frames, each one grey value brighter than the one before;
    # blocks are shifted per instance and position (12-bit values throughout).
    offsets = np.arange(16, dtype=np.uint16)[:, None, None]
    block = ((base[None, :, :] + offsets) & 0x0FFF).astype("<u2")

    paths = []
    for index, frames in enumerate(counts):
        instance = InstanceSpec(study, series, index)
        header = _header(instance)
        header.NumberOfFrames = frames
        header.file_meta = _file_meta(
            header.SOPClassUID, header.SOPInstanceUID, ExplicitVRLittleEndian
        )
        path = out_dir / instance.relative_path

        def writer(
            stream: BinaryIO,
            header: Dataset = header,
            frames: int = frames,
            index: int = index,
        ) -> None:
            dcmwrite(stream, header, enforce_file_format=True)
            # Pixel Data (7FE0,0010) OW, explicit VR little endian, 32-bit length.
            stream.write(
                struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * frame_bytes)
            )
            buffer = np.empty_like(block)
            for start in range(0, frames, len(block)):
                count = min(len(block), frames - start)
                shift = np.uint16((start + 37 * index) % 4096)
                np.add(block, shift, out=buffer)
                np.bitwise_and(buffer, 0x0FFF, out=buffer)
                stream.write(buffer[:count].data)

        _atomic_write(path, writer)
        paths.append(path)
    return paths
