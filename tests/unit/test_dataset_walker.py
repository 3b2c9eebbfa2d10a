"""DatasetWalker (sans-I/O element walker) and verify_dicom_file built on it."""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
import pytest
from pydicom import dcmwrite
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_16, EXPLICIT_VR_LENGTH_32

from dicomtrolley import synthetic
from dicomtrolley.exceptions import DICOMParseError
from dicomtrolley.formats import dataset_walker
from dicomtrolley.formats.dataset_walker import (
    LONG_VRS,
    SHORT_VRS,
    UNDEFINED_LENGTH,
    DatasetWalker,
    character_encoding,
    parse_file_header,
)
from dicomtrolley.storage import (
    _verify_with_pydicom,
    _verify_with_walker,
    verified_dataset,
    verify_dicom_file,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SOP = "1.2.840.1.2.3"
STUDY = "1.2.840.1"
PIXEL_DATA = 0x7FE00010
ITEM_HEADER = struct.Struct("<HHL")
SEQUENCE_END = ITEM_HEADER.pack(0xFFFE, 0xE0DD, 0)
ITEM_END = ITEM_HEADER.pack(0xFFFE, 0xE00D, 0)

# --------------------------------------------------------------------------- #
# encoding test data by hand (what each byte is must be under the test's control)
# --------------------------------------------------------------------------- #


def element(
    tag: int, vr: str, value: bytes, *, implicit: bool, undefined: bool = False
) -> bytes:
    """One element; undefined=True gives an undefined length and a delimiter."""
    group, elem = tag >> 16, tag & 0xFFFF
    length = UNDEFINED_LENGTH if undefined else len(value)
    end = SEQUENCE_END if undefined else b""
    if implicit:
        return ITEM_HEADER.pack(group, elem, length) + value + end
    if vr in LONG_VRS:
        header = struct.pack("<HH2s2xL", group, elem, vr.encode(), length)
        return header + value + end
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def item(content: bytes, *, undefined: bool = False) -> bytes:
    if undefined:
        return ITEM_HEADER.pack(0xFFFE, 0xE000, UNDEFINED_LENGTH) + content + ITEM_END
    return ITEM_HEADER.pack(0xFFFE, 0xE000, len(content)) + content


def text(value: str, pad: bytes = b" ") -> bytes:
    data = value.encode("ascii")
    return data + pad if len(data) % 2 else data


def sample_elements(implicit: bool) -> list[bytes]:
    """Top-level elements of a data set with every structure the walker meets."""

    def e(tag: int, vr: str, value: bytes, undefined: bool = False) -> bytes:
        return element(tag, vr, value, implicit=implicit, undefined=undefined)

    code_item = e(0x00080100, "SH", text("121327")) + e(0x00080102, "SH", text("DCM"))
    derivation = e(0x00089215, "SQ", item(code_item, undefined=True), undefined=True)
    referenced = item(
        e(0x00081150, "UI", text(CTImageStorage, b"\0"))
        + e(0x00081155, "UI", text("1.2.3.4.5", b"\0"))
        + derivation,
        undefined=True,
    ) + item(e(0x00081160, "IS", text("1")))
    fragments = item(b"") + item(b"\x01" * 100) + item(b"\x02" * 6)
    return [
        e(0x00080005, "CS", text("ISO_IR 100")),
        e(0x00080016, "UI", text(CTImageStorage, b"\0")),
        e(0x00080018, "UI", text(SOP, b"\0")),
        e(0x00080020, "DA", b""),
        e(0x00081140, "SQ", referenced, undefined=True),
        e(0x00100010, "PN", text("Doe^Jane")),
        e(0x0020000D, "UI", text(STUDY, b"\0")),
        e(0x00280010, "US", struct.pack("<H", 2)),
        e(0x00290010, "LO", text("ACME 1.0")),
        e(0x00291010, "OB", bytes(range(256)) * 20),  # 5120 bytes: not kept
        e(0x00400260, "SQ", item(code_item)),  # defined length: opaque
        e(PIXEL_DATA, "OB", fragments, undefined=True),
        e(0xFFFCFFFC, "OB", b"\0" * 4),
    ]


def sample(implicit: bool) -> bytes:
    return b"".join(sample_elements(implicit))


def boundaries(implicit: bool) -> set[int]:
    """Offsets where a top-level element ends (and 0)."""
    ends, position = {0}, 0
    for encoded in sample_elements(implicit):
        position += len(encoded)
        ends.add(position)
    return ends


def meta_group(syntax: str) -> bytes:
    body = b"".join(
        element(tag, vr, value, implicit=False)
        for tag, vr, value in (
            (0x00020001, "OB", b"\x00\x01"),
            (0x00020002, "UI", text(CTImageStorage, b"\0")),
            (0x00020003, "UI", text(SOP, b"\0")),
            (0x00020010, "UI", text(syntax, b"\0")),
        )
    )
    length = element(0x00020000, "UL", struct.pack("<L", len(body)), implicit=False)
    return length + body


def part10(dataset: bytes, syntax: str) -> bytes:
    return bytes(128) + b"DICM" + meta_group(syntax) + dataset


def walk(data: bytes, chunks: Iterator[bytes] | None = None, **options: Any) -> Any:
    """Summary of what a walker makes of data, fed in chunks (default: at once)."""
    walker = DatasetWalker(implicit_vr=options.pop("implicit_vr", False), **options)
    for chunk in chunks if chunks is not None else [data]:
        walker.feed(chunk)
    return summary(walker)


def summary(walker: DatasetWalker) -> list[tuple[Any, ...]]:
    elements = walker.elements()
    assert elements is not None
    return [
        (int(raw.tag), raw.VR, raw.length, raw.value, raw.value_tell)
        for raw in elements.values()
        if isinstance(raw, RawDataElement)
    ]


def values(data: bytes, implicit: bool = False) -> dict[int, Any]:
    """Converted top-level values (None for deferred ones: there is no file)."""
    walker = DatasetWalker(implicit_vr=implicit)
    walker.feed(data)
    dataset = walker.dataset()
    assert dataset is not None
    deferred = {tag for tag, raw in dataset._dict.items() if raw.value is None}
    return {
        tag: None if tag in deferred else dataset[tag].value for tag in tags(dataset)
    }


def tags(dataset: Dataset) -> list[int]:
    """Top-level tags in file order (iterating a Dataset gives its elements)."""
    return [int(tag) for tag in dataset._dict]


# --------------------------------------------------------------------------- #
# the walker
# --------------------------------------------------------------------------- #


def test_vr_tables_match_pydicom() -> None:
    assert set(EXPLICIT_VR_LENGTH_32) == LONG_VRS
    assert set(EXPLICIT_VR_LENGTH_16) == SHORT_VRS


def test_raw_data_elements_are_made_the_fast_way() -> None:
    """pydicom's RawDataElement still has the fields the walker fills directly."""
    assert RawDataElement._fields == dataset_walker._RAW_FIELDS
    assert dataset_walker._new_raw is tuple.__new__
    fields = (pydicom.tag.BaseTag(1), "UI", 2, b"12", 3, False, True, True, False)
    compatible = dataset_walker._new_raw_compatible(RawDataElement, fields)
    assert compatible == RawDataElement(*fields)


@pytest.mark.parametrize("implicit", [False, True])
def test_the_hand_made_sample_reads_the_same_in_pydicom(implicit: bool) -> None:
    """The test data is valid DICOM: pydicom finds the same top-level tags."""
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    theirs = pydicom.dcmread(io.BytesIO(part10(sample(implicit), syntax)))
    ours = values(sample(implicit), implicit)
    assert list(ours) == tags(theirs)
    assert ours[0x00080018] == theirs.SOPInstanceUID == SOP
    assert len(theirs.ReferencedImageSequence) == 2


@pytest.mark.parametrize("implicit", [False, True])
def test_values_and_positions(implicit: bool) -> None:
    data = sample(implicit)
    walker = DatasetWalker(implicit_vr=implicit, offset=1000)
    walker.feed(data)
    elements = walker.elements()
    assert elements is not None
    sop = elements[pydicom.tag.BaseTag(0x00080018)]
    assert isinstance(sop, RawDataElement)
    assert sop.value == text(SOP, b"\0")
    assert data[sop.value_tell - 1000 :].startswith(sop.value)
    assert sop.is_implicit_VR is implicit
    assert sop.VR is None if implicit else sop.VR == "UI"
    private = elements[pydicom.tag.BaseTag(0x00291010)]
    assert isinstance(private, RawDataElement)
    assert (private.length, private.value) == (5120, None)  # deferred, as pydicom
    pixels = elements[pydicom.tag.BaseTag(PIXEL_DATA)]
    assert isinstance(pixels, RawDataElement)
    assert pixels.length == UNDEFINED_LENGTH
    assert 0xFFFCFFFC in elements  # the element after the encapsulated pixel data


@pytest.mark.parametrize("implicit", [False, True])
def test_every_split_gives_the_same_result(implicit: bool) -> None:
    data = sample(implicit)
    whole = walk(data, implicit_vr=implicit)
    for split in range(len(data) + 1):
        parts = iter([data[:split], data[split:]])
        assert walk(data, parts, implicit_vr=implicit) == whole, split


@pytest.mark.parametrize("implicit", [False, True])
def test_byte_by_byte_gives_the_same_result(implicit: bool) -> None:
    data = sample(implicit)
    single = (data[i : i + 1] for i in range(len(data)))
    assert walk(data, single, implicit_vr=implicit) == walk(data, implicit_vr=implicit)


def test_buffers_are_copied_not_shared() -> None:
    data = bytearray(sample(False))
    walker = DatasetWalker(implicit_vr=False)
    walker.feed(memoryview(data)[:300])
    walker.feed(memoryview(data)[300:])
    data[:] = bytes(len(data))  # the caller reuses its buffer
    result = summary(walker)
    assert result == walk(sample(False))
    assert all(type(value) in (bytes, type(None)) for *_, value, _ in result)


def test_nested_undefined_length_sequences() -> None:
    ds = values(sample(False))
    referenced = ds[0x00081140]
    assert len(referenced) == 2
    assert referenced[0].ReferencedSOPInstanceUID == "1.2.3.4.5"
    assert referenced[0].DerivationCodeSequence[0].CodeValue == "121327"
    assert referenced[1].ReferencedFrameNumber == 1
    assert ds[0x00400260][0].CodingSchemeDesignator == "DCM"  # defined length SQ


def test_un_with_undefined_length_holds_implicit_items() -> None:
    """PS3.5 6.2.2: an explicit VR file, the sequence's content implicit VR."""
    code = element(0x00080100, "SH", text("121327"), implicit=True)
    data = element(0x00081140, "UN", item(code, undefined=True), implicit=False)
    data = data[:-8] + SEQUENCE_END  # element() added the delimiter already
    data += element(0x00100010, "PN", text("Doe"), implicit=False)
    ds = values(data)
    assert ds[0x00081140][0].CodeValue == "121327"
    assert ds[0x00100010] == "Doe"


@pytest.mark.parametrize("told_implicit", [False, True])
def test_the_first_element_decides_the_vr_encoding(told_implicit: bool) -> None:
    """As pydicom: a transfer syntax that lies about the VR encoding is survived."""
    data = sample(not told_implicit)
    walker = DatasetWalker(implicit_vr=told_implicit)
    walker.feed(data)
    assert walker.found_implicit_vr is not told_implicit
    assert walker.implicit_vr is told_implicit
    assert summary(walker) == walk(data, implicit_vr=not told_implicit)


@pytest.mark.parametrize("implicit", [False, True])
def test_every_cut_inside_an_element_is_refused(implicit: bool) -> None:
    """A cut is accepted exactly at top-level element boundaries."""
    data = sample(implicit)
    accepted = set()
    for size in range(len(data) + 1):
        walker = DatasetWalker(implicit_vr=implicit)
        try:
            walker.feed(data[:size])
            walker.close()
        except DICOMParseError:
            continue
        accepted.add(size)
    assert accepted == boundaries(implicit)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (3, r"inside the element header at byte 100 \(3 byte"),
        (12, r"inside the value of element \(0008,0005\), which ends at byte 118"),
        (
            -20,
            r"header at byte \d+ \(4 byte\(s\) of it\), inside undefined-length "
            r"element \(7FE0,0010\) from byte \d+ \(no sequence delimiter\)",
        ),
        (-24, r"at byte \d+, inside undefined-length element \(7FE0,0010\)"),
        (-28, r"value of element \(FFFE,E000\).*inside undefined-length element"),
    ],
)
def test_close_says_what_is_missing_and_where(cut: int, message: str) -> None:
    walker = DatasetWalker(implicit_vr=False, offset=100)
    walker.feed(sample(False)[:cut])
    with pytest.raises(DICOMParseError, match=message):
        walker.close()
    with pytest.raises(DICOMParseError):  # and stays failed
        walker.elements()


def test_an_unterminated_nested_item_is_refused() -> None:
    data = sample(False)
    cut = data.index(ITEM_END)  # inside the first undefined-length item
    walker = DatasetWalker(implicit_vr=False)
    walker.feed(data[:cut])
    with pytest.raises(DICOMParseError, match=r"\(0008,1140\).*no sequence"):
        walker.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            element(0x00080016, "UI", b"1.2", implicit=False)
            + b"\x08\x00\x18\x00u\x01\x04\x001234",
            r"invalid explicit VR b'u\\x01' in the element at byte 11",
        ),
        (item(b"abcd"), r"found \(FFFE,E000\) at byte 0 where a data element"),
        (
            element(0x00080016, "UI", b"1.2", implicit=False) + item(b"abcd"),
            r"found \(FFFE,E000\) at byte 11 where a data element",
        ),
        (
            element(0x00081140, "SQ", b"", implicit=False, undefined=True)[:12]
            + element(0x00100010, "PN", b"Doe ", implicit=False),
            r"found \(0010,0010\) at byte 12 where an item of undefined-length "
            r"element \(0008,1140\)",
        ),
        (
            element(0x00081140, "SQ", b"", implicit=False, undefined=True)[:12]
            + ITEM_HEADER.pack(0xFFFE, 0xE000, UNDEFINED_LENGTH)
            + SEQUENCE_END,
            r"found \(FFFE,E0DD\) at byte 20 where an element of an item",
        ),
    ],
)
def test_structural_garbage_is_refused_while_feeding(data: bytes, message: str) -> None:
    walker = DatasetWalker(implicit_vr=False)
    with pytest.raises(DICOMParseError, match=message):
        walker.feed(data)
    with pytest.raises(DICOMParseError, match=message):  # and stays failed
        walker.feed(b"")


def test_unknown_capital_letter_vrs_have_a_16_bit_length() -> None:
    data = struct.pack("<HH2sH", 0x0011, 0x1001, b"QQ", 2) + b"ab"
    assert walk(data) == [(0x00111001, "QQ", 2, b"ab", 8)]


def test_feeding_after_close_is_a_programming_error() -> None:
    walker = DatasetWalker(implicit_vr=False)
    walker.close()
    with pytest.raises(RuntimeError):
        walker.feed(b"")


def test_skipping_what_is_skippable_gives_the_same_result() -> None:
    """A reader that seeks over skippable bytes sees what a full feed sees."""
    data = sample(False)
    walker = DatasetWalker(implicit_vr=False)
    position, skipped = 0, 0
    while position < len(data):
        count = walker.skippable
        if count:
            walker.skip(count)
            position += count
            skipped += count
        else:
            walker.feed(data[position : position + 64])
            position += 64
    assert skipped > 4000  # most of the 5120-byte private value
    assert summary(walker) == walk(data)


def test_nothing_is_skippable_inside_a_kept_sequence() -> None:
    """Kept sequence bytes must be seen, even inside a defined-length item."""
    big = item(b"x" * 500)
    data = element(0x00081140, "SQ", big, implicit=False, undefined=True)
    walker = DatasetWalker(implicit_vr=False)
    walker.feed(data[:30])
    assert walker.skippable == 0
    with pytest.raises(ValueError, match="cannot skip"):
        walker.skip(1)
    walker.feed(data[30:])
    assert values(data)[0x00081140][0] is not None


def test_a_long_sequence_is_not_kept() -> None:
    data = sample(False)
    walker = DatasetWalker(implicit_vr=False, sequence_limit=64)
    walker.feed(data)
    assert walker.elements() is None  # the caller reads such a file with pydicom
    assert walker.dataset() is None
    walker = DatasetWalker(implicit_vr=False, sequence_limit=64, capture_limit=8)
    walker.feed(
        element(PIXEL_DATA, "OB", item(b"y" * 200), implicit=False, undefined=True)
    )
    assert walker.elements() is not None  # pixel data is walked, never kept


def test_character_encoding_is_pydicoms() -> None:
    for charset in (None, "", "ISO_IR 100", "ISO_IR 192", ["", "ISO 2022 IR 87"]):
        for implicit in (False, True):
            ds = Dataset()
            if charset is not None:
                ds.add_new(0x00080005, "CS", charset)
            ds.PatientName = "x"
            buffer = io.BytesIO()
            dcmwrite(buffer, ds, implicit_vr=implicit, little_endian=True)
            theirs = pydicom.dcmread(io.BytesIO(buffer.getvalue()), force=True)
            walker = DatasetWalker(implicit_vr=implicit)
            walker.feed(buffer.getvalue())
            elements = walker.elements()
            assert elements is not None
            assert character_encoding(elements) == theirs._read_charset, charset


def test_an_unknown_vr_for_the_character_set_is_refused_as_by_pydicom(
    tmp_path: Path,
) -> None:
    """pydicom converts (0008,0005) while reading; an unknown VR stops it."""
    data = sample(False).replace(b"\x08\x00\x05\x00CS", b"\x08\x00\x05\x00KS", 1)
    walker = DatasetWalker(implicit_vr=False)
    walker.feed(data)
    elements = walker.elements()
    assert elements is not None
    with pytest.raises(DICOMParseError, match=r"\(0008,0005\).*KS"):
        character_encoding(elements)
    path = tmp_path / "f.dcm"
    path.write_bytes(part10(data, ExplicitVRLittleEndian))
    assert outcome(_verify_with_pydicom, path) is None
    assert outcome(verify_dicom_file, path) is None


# --------------------------------------------------------------------------- #
# file header
# --------------------------------------------------------------------------- #


def test_file_header_matches_pydicom(tmp_path: Path) -> None:
    data = part10(sample(False), ExplicitVRLittleEndian)
    path = tmp_path / "f.dcm"
    path.write_bytes(data)
    header = parse_file_header(data, at_eof=True)
    assert header is not None
    assert header.transfer_syntax == ExplicitVRLittleEndian
    assert header.dataset_offset == len(data) - len(sample(False))
    assert header.preamble == bytes(128)
    assert header.file_meta == read_file_meta_info(path)
    # the data set start is only known once its first tag is seen
    meta_end = header.dataset_offset
    assert parse_file_header(data[:meta_end], at_eof=False) is None
    assert parse_file_header(data[: meta_end + 4], at_eof=False) is not None
    assert parse_file_header(data[:100], at_eof=False) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\0" * 100, "too few"),
        (b"\0" * 128 + b"DICX", "no 'DICM'"),
        (part10(b"", ExplicitVRLittleEndian)[:-3], r"\(0002,0010\) runs past"),
        (bytes(128) + b"DICM" + b"\x02\x00\x10\x00u\x01\x02\x00ab", "bad VR"),
    ],
)
def test_broken_file_headers(data: bytes, message: str) -> None:
    with pytest.raises(DICOMParseError, match=message):
        parse_file_header(data, at_eof=True)


# --------------------------------------------------------------------------- #
# verify_dicom_file against the pydicom-based check it replaces
# --------------------------------------------------------------------------- #


def outcome(check: Any, path: Path) -> Any:
    try:
        return check(path)
    except DICOMParseError:
        return None


def pydicom_test_files() -> list[Path]:
    """pydicom's own test files that are on disk (no downloads)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = pydicom.data.get_testdata_files()
    return sorted(Path(name) for name in names if Path(name).is_file())


def assert_same_dataset(old: Any, new: Any) -> None:
    assert tags(old) == tags(new)
    for tag in tags(old):
        raw = old._dict[tag]
        small = isinstance(raw, RawDataElement) and raw.length <= 4096
        if small and old[tag].VR != "SQ":
            assert new[tag].VR == old[tag].VR, tag
            assert new[tag].value == old[tag].value, tag
    assert new.file_meta == old.file_meta
    assert new.preamble == old.preamble
    assert new.original_encoding == old.original_encoding
    assert new.original_character_set == old.original_character_set


def test_same_verdicts_and_values_on_pydicoms_test_files() -> None:
    files = pydicom_test_files()
    walked = 0
    for path in files:
        old = outcome(_verify_with_pydicom, path)
        new = outcome(verify_dicom_file, path)
        assert (old is None) == (new is None), path.name
        if old is not None:
            assert_same_dataset(old, new)
        walked += outcome(_verify_with_walker, path) is not None
    assert len(files) > 150
    assert walked > 140  # the fast path, not the pydicom fallback, was compared


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "rtplan.dcm"]
)
def test_truncated_copies_are_refused_by_both(name: str, tmp_path: Path) -> None:
    data = Path(pydicom.data.get_testdata_file(name)).read_bytes()  # type: ignore[arg-type]
    header = parse_file_header(data, at_eof=True)
    assert header is not None
    start = header.dataset_offset
    path = tmp_path / name
    for size in (60, 140, start + 3, start + 31, len(data) // 2 + 1, len(data) - 9):
        path.write_bytes(data[:size])
        assert outcome(_verify_with_pydicom, path) is None, size
        assert outcome(verify_dicom_file, path) is None, size


def test_stricter_than_the_old_check(tmp_path: Path) -> None:
    """Cuts the old check let pass, as it could not see where some elements end.

    A partial header after an undefined-length element (pydicom gives no
    position for sequences and encapsulated pixel data); a cut inside
    (0008,0005), which pydicom converts while reading; a cut inside the length
    of the sequence delimiter that ends encapsulated pixel data.
    """
    hand_made = part10(sample(False), ExplicitVRLittleEndian)
    ct_small = Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes()  # type: ignore[arg-type]
    jpeg = Path(pydicom.data.get_testdata_file("JPEG2000.dcm")).read_bytes()  # type: ignore[arg-type]
    path = tmp_path / "cut"
    for cut in (hand_made[:-12], ct_small[:347], jpeg[:-1]):
        path.write_bytes(cut)
        assert outcome(_verify_with_pydicom, path) is not None
        with pytest.raises(DICOMParseError, match="cut: truncated: data ends"):
            verify_dicom_file(path)


@pytest.mark.parametrize("implicit", [False, True])
def test_verify_a_hand_made_file(implicit: bool, tmp_path: Path) -> None:
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    path = tmp_path / "f.dcm"
    path.write_bytes(part10(sample(implicit), syntax))
    ds = verify_dicom_file(path)
    assert _verify_with_walker(path) is not None
    assert ds.SOPInstanceUID == SOP
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.ReferencedImageSequence[0].DerivationCodeSequence[0].CodeValue == "121327"
    # deferred values come from the file, as with pydicom
    assert ds[0x00291010].value == bytes(range(256)) * 20
    assert ds.PixelData == _verify_with_pydicom(path).PixelData
    assert_same_dataset(_verify_with_pydicom(path), ds)


def test_verify_seeks_over_big_values(tmp_path: Path) -> None:
    """A 20 MB file: the walker is fed the header only."""
    [path] = synthetic.large_study(tmp_path, 20_000_000, 20 * 1024**2, key="verify")
    fed = []
    original = DatasetWalker.feed

    def counting_feed(walker: DatasetWalker, data: Any) -> None:
        fed.append(len(data))
        original(walker, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatasetWalker, "feed", counting_feed)
        ds = verify_dicom_file(path)
    assert sum(fed) < 20_000
    assert ds.NumberOfFrames == 39
    assert_same_dataset(_verify_with_pydicom(path), ds)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DICOMParseError, match=r"truncated: .*\(7FE0,0010\)"):
        verify_dicom_file(path)


def test_verify_the_demo_files(tmp_path: Path) -> None:
    studies = synthetic.default_studies()[:2]
    paths = synthetic.write_studies(tmp_path, studies)
    syntaxes = set()
    for path in paths:
        ds = verify_dicom_file(path)
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
        assert _verify_with_walker(path) is not None
        assert_same_dataset(_verify_with_pydicom(path), ds)
    assert syntaxes >= {ExplicitVRLittleEndian, RLELossless}


def big_endian_file() -> bytes:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = SOP
    ds.Rows = 2
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(SOP)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def implicit_element_in_explicit_file() -> bytes:
    """pydicom reads an element without a VR in an explicit VR data set."""
    data = sample(False)
    odd = element(0x00100020, "LO", text("PAT1"), implicit=True)
    at = data.index(element(0x0020000D, "UI", text(STUDY, b"\0"), implicit=False))
    return part10(data[:at] + odd + data[at:], ExplicitVRLittleEndian)


def long_private_file_meta() -> bytes:
    """A file meta longer than the walker's first read (16 KiB)."""
    data = part10(sample(False), ExplicitVRLittleEndian)
    private = element(0x00020102, "OB", b"\0" * 20_000, implicit=False)
    meta_end = data.index(sample(False))
    return data[:meta_end] + private + data[meta_end:]


@pytest.mark.parametrize(
    "make", [big_endian_file, implicit_element_in_explicit_file, long_private_file_meta]
)
def test_what_the_walker_does_not_take_pydicom_still_reads(
    make: Any, tmp_path: Path
) -> None:
    path = tmp_path / "f.dcm"
    path.write_bytes(make())
    assert _verify_with_walker(path) is None
    ds = verify_dicom_file(path)
    assert ds.SOPInstanceUID == SOP
    assert_same_dataset(_verify_with_pydicom(path), ds)


def test_verified_dataset_for_bytes_walked_while_writing(tmp_path: Path) -> None:
    """What a DIMSE receiver does: walk the data set as it writes the file."""
    data = sample(False)
    header_bytes = bytes(128) + b"DICM" + meta_group(ExplicitVRLittleEndian)
    header = parse_file_header(header_bytes + data[:8], at_eof=False)
    assert header is not None and header.file_meta is not None
    path = tmp_path / "received.dcm"
    path.write_bytes(header_bytes + data)
    walker = DatasetWalker(implicit_vr=False, offset=len(header_bytes))
    for start in range(0, len(data), 1000):
        walker.feed(data[start : start + 1000])
    ds = verified_dataset(walker, header.file_meta, path, header.preamble)
    assert_same_dataset(_verify_with_pydicom(path), ds)
    assert ds.filename == str(path)

    walker = DatasetWalker(implicit_vr=False, offset=len(header_bytes))
    walker.feed(data[:-100])
    with pytest.raises(DICOMParseError, match=r"received\.dcm: truncated"):
        verified_dataset(walker, header.file_meta, path)
    with pytest.raises(DICOMParseError, match="no data elements"):
        verified_dataset(DatasetWalker(implicit_vr=False), header.file_meta, path)

    walker = DatasetWalker(
        implicit_vr=False, offset=len(header_bytes), sequence_limit=8
    )
    walker.feed(data)  # a sequence too long to keep: pydicom reads the file
    ds = verified_dataset(walker, header.file_meta, path)
    assert len(ds.ReferencedImageSequence) == 2


@pytest.mark.parametrize("kind", ["missing", "folder", "empty data set"])
def test_verify_raises_only_dicom_parse_errors(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "f.dcm"
    if kind == "folder":
        path.mkdir()
    elif kind == "empty data set":
        path.write_bytes(part10(b"", ExplicitVRLittleEndian))
    with pytest.raises(DICOMParseError, match=r"f\.dcm"):
        verify_dicom_file(path)


def test_a_walker_failure_falls_back_to_pydicom(tmp_path: Path) -> None:
    """Should the walker ever trip over itself, pydicom gives the verdict."""
    path = tmp_path / "f.dcm"
    path.write_bytes(part10(sample(False), ExplicitVRLittleEndian))

    def broken(walker: DatasetWalker, data: Any) -> None:
        raise struct.error("unpack_from requires a buffer of at least 8 bytes")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatasetWalker, "feed", broken)
        with pytest.raises(struct.error):
            _verify_with_walker(path)
        ds = verify_dicom_file(path)
    assert ds.SOPInstanceUID == SOP
    assert_same_dataset(_verify_with_pydicom(path), ds)
