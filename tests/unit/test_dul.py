"""Tests for the sans-I/O upper layer framing and command sets (dicomtrolley.formats.dul)
and the Part 10 file header (dicomtrolley.formats.part10)."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ABORT_RQ, A_RELEASE_RP, A_RELEASE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.formats import dul
from dicomtrolley.formats.part10 import IMPLEMENTATION_CLASS_UID, file_header

SOP = "1.2.826.0.1.3680043.8.498.1.2.3"


def pdata(context_id: int, control: int, payload: bytes) -> bytes:
    """A P-DATA-TF PDU with one PDV, built by pynetdicom."""
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[context_id, bytes([control]) + payload]]
    return bytes(P_DATA_TF(primitive).encode())


def stream() -> bytes:
    """A command, a data set in two fragments, a PDU with two PDVs, a release."""
    return b"".join(
        (
            pdata(1, 0x03, b"command!"),
            pdata(3, 0x00, b"first half "),
            pdata(3, 0x02, b"second half"),
            bytes(P_DATA_TF_two()),
            bytes(A_RELEASE_RQ().encode()),
        )
    )


def P_DATA_TF_two() -> bytes:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[5, b"\x01cmd"], [5, b"\x02data"]]
    return bytes(P_DATA_TF(primitive).encode())


def summary(events: list[dul.Event]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for event in events:
        if isinstance(event, dul.PDU):
            out.append(("pdu", event.type, event.raw))
        else:
            out.append((event.context_id, event.command, event.last, bytes(event.data)))
    return out


EXPECTED = [
    (1, True, True, b"command!"),
    (3, False, False, b"first half "),
    (3, False, True, b"second half"),
    (5, True, False, b"cmd"),
    (5, False, True, b"data"),
    ("pdu", dul.A_RELEASE_RQ, dul.release_rq()),
]


def test_reader_reads_fragments_and_pdus() -> None:
    assert summary(dul.PDUReader().feed(stream())) == EXPECTED


def test_reader_gives_the_same_events_for_a_split_at_every_offset() -> None:
    data = stream()
    for cut in range(len(data) + 1):
        reader = dul.PDUReader()
        events = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert summary(events) == EXPECTED, cut
        assert reader.buffered == 0


def test_reader_byte_by_byte() -> None:
    reader = dul.PDUReader()
    events: list[dul.Event] = []
    for index in range(len(stream())):
        events += summary(reader.feed(stream()[index : index + 1]))  # type: ignore[arg-type]
    assert events == EXPECTED


def test_reader_holds_back_an_incomplete_pdu() -> None:
    data = pdata(1, 0x03, b"command!")
    reader = dul.PDUReader()
    assert reader.feed(data[:-1]) == []
    assert reader.buffered == len(data) - 1


class Chunks:
    """A recv_into over data that hands out the given sizes (then the rest),
    and 0 once everything is read (the peer closed)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.pos = data, list(sizes), 0

    def __call__(self, view: memoryview) -> int:
        size = self.sizes.pop(0) if self.sizes else len(self.data)
        piece = self.data[self.pos : self.pos + min(size, len(view))]
        view[: len(piece)] = piece
        self.pos += len(piece)
        return len(piece)


def received(reader: dul.PDUReader, chunks: Chunks) -> list[tuple[object, ...]]:
    """Every event receive() gives until the end, summarised as it comes (its
    views are good only until the next call)."""
    out: list[tuple[object, ...]] = []
    while (events := reader.receive(chunks)) is not None:
        out += summary(events)
    return out


def test_receive_gives_the_same_events_for_a_split_at_every_offset() -> None:
    data = stream()
    for cut in range(1, len(data) + 1):  # (a read of 0 bytes: the peer closed)
        reader = dul.PDUReader()
        assert received(reader, Chunks(data, [cut])) == EXPECTED, cut
        assert reader.buffered == 0


def test_receive_byte_by_byte() -> None:
    data = stream()
    assert received(dul.PDUReader(), Chunks(data, [1] * len(data))) == EXPECTED


def test_receive_reuses_its_buffer_without_losing_a_byte() -> None:
    """128 KiB PDUs read in pieces that end inside PDUs: the start of an
    incomplete one moves to the front of the buffer, over the bytes of
    fragments already handed out; a PDU larger than the buffer grows it."""
    payloads = [
        bytes([n % 251]) * (131072 - 12) + n.to_bytes(4, "big") for n in range(60)
    ]
    payloads.insert(30, bytes(range(256)) * (5 * 4096))  # 5 MiB: one PDU
    data = b"".join(
        b"".join(dul.p_data(1, p, command=False, max_length=len(p) + 6))
        for p in payloads
    )
    for size in (65536, 300_001, 1 << 20):
        got = received(dul.PDUReader(), Chunks(data, [size] * (len(data) // size + 1)))
        assert [event[3] for event in got] == payloads, size


def test_receive_refuses_what_is_not_dicom() -> None:
    with pytest.raises(dul.DULProtocolError, match="unknown PDU type 0x48"):
        dul.PDUReader().receive(Chunks(b"HTTP/1.1 400 Bad Request\r\n\r\n", []))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x09\x00\x00\x00\x00\x04abcd", "unknown PDU type 0x09"),
        (b"\x04\x00\x00\x00\x00\x00", "without presentation data values"),
        (b"\x04\x00\x00\x00\x00\x04\x00\x00\x00\x09", "ends inside a PDV item header"),
        (
            b"\x04\x00\x00\x00\x00\x08\x00\x00\x00\x09\x01\x03ab",
            "PDV item length 9 does not fit",
        ),
        (b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\x01\x01\x03", "PDV item length 1"),
    ],
)
def test_reader_refuses_what_is_not_dicom(data: bytes, message: str) -> None:
    with pytest.raises(dul.DULProtocolError, match=message) as caught:
        dul.PDUReader().feed(data)
    assert isinstance(caught.value, DICOMTrolleyError)


def test_reader_refuses_oversized_pdus() -> None:
    with pytest.raises(dul.DULProtocolError, match="larger than the 100 allowed"):
        dul.PDUReader(max_length=100).feed(b"\x04\x00\x00\x00\x01\x00")


@pytest.mark.parametrize("max_length", [0, 7, 8, 16, 1000])
def test_p_data_splits_within_the_peers_maximum(max_length: int) -> None:
    payload = bytes(range(200)) * 3
    pdus = list(dul.p_data(7, payload, command=False, max_length=max_length))
    events = dul.PDUReader().feed(b"".join(pdus))
    assert all(isinstance(e, dul.Fragment) for e in events)
    fragments = [e for e in events if isinstance(e, dul.Fragment)]
    assert b"".join(bytes(f.data) for f in fragments) == payload
    assert [f.last for f in fragments] == [False] * (len(fragments) - 1) + [True]
    assert {(f.context_id, f.command) for f in fragments} == {(7, False)}
    if max_length:
        assert all(len(p) - 6 <= max_length for p in pdus)
    else:
        assert len(pdus) == 1
    # pynetdicom reads the same PDUs
    for raw in pdus:
        pdu = P_DATA_TF()
        pdu.decode(raw)
        [(context_id, value)] = pdu.to_primitive().presentation_data_value_list
        assert context_id == 7 and value[0] & 1 == 0


def test_p_data_of_an_empty_payload_is_one_last_fragment() -> None:
    [pdu] = dul.p_data(1, b"", command=True, max_length=16384)
    [fragment] = dul.PDUReader().feed(pdu)
    assert isinstance(fragment, dul.Fragment)
    assert fragment.command and fragment.last and bytes(fragment.data) == b""


def test_p_data_refuses_a_maximum_too_small_for_data() -> None:
    with pytest.raises(dul.DULProtocolError, match="too small"):
        list(dul.p_data(1, b"abc", command=True, max_length=6))


def test_small_pdus_equal_pynetdicoms() -> None:
    assert dul.release_rq() == bytes(A_RELEASE_RQ().encode())
    assert dul.release_rp() == bytes(A_RELEASE_RP().encode())
    pdu = A_ABORT_RQ()
    pdu.source = 2
    pdu.reason_diagnostic = 6
    assert dul.abort(2, 6) == bytes(pdu.encode())
    [event] = dul.PDUReader().feed(dul.abort(2, 6))
    assert isinstance(event, dul.PDU) and dul.abort_reason(event) == (2, 6)


def pydicom_command(**values: object) -> bytes:
    """A command set as pydicom encodes it (Implicit VR LE, group length first)."""
    dataset = Dataset()
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    body = encode(dataset, True, True)
    assert body is not None
    length = Dataset()
    length.CommandGroupLength = len(body)
    head = encode(length, True, True)
    assert head is not None
    return head + body


def test_command_encoding_equals_pydicoms() -> None:
    ours = dul.encode_command(
        {
            dul.AFFECTED_SOP_CLASS_UID: CTImageStorage,
            dul.COMMAND_FIELD: dul.C_STORE_RSP,
            dul.MESSAGE_ID_BEING_RESPONDED_TO: 7,
            dul.COMMAND_DATA_SET_TYPE: dul.NO_DATASET,
            dul.STATUS: 0xA700,
            dul.AFFECTED_SOP_INSTANCE_UID: SOP,
        }
    )
    assert ours == pydicom_command(
        AffectedSOPClassUID=CTImageStorage,
        CommandField=0x8001,
        MessageIDBeingRespondedTo=7,
        CommandDataSetType=0x0101,
        Status=0xA700,
        AffectedSOPInstanceUID=SOP,
    )


def test_command_decoding_reads_what_pydicom_wrote() -> None:
    raw = pydicom_command(
        AffectedSOPClassUID=CTImageStorage,
        CommandField=0x8010,
        MessageIDBeingRespondedTo=12,
        CommandDataSetType=0x0000,
        Status=0xFF00,
        NumberOfRemainingSuboperations=3,
        NumberOfCompletedSuboperations=2,
        NumberOfFailedSuboperations=1,
        NumberOfWarningSuboperations=0,
        ErrorComment="odd",
        MoveOriginatorApplicationEntityTitle="ORTHANC",
        OffendingElement=[0x00100010],
    )
    command = dul.decode_command(raw)
    assert command[dul.COMMAND_FIELD] == dul.C_GET_RSP
    assert command[dul.AFFECTED_SOP_CLASS_UID] == CTImageStorage
    assert command[dul.STATUS] == 0xFF00
    assert [command[e] for e in (dul.REMAINING, dul.COMPLETED, dul.FAILED)] == [3, 2, 1]
    assert dul.command_int(command, dul.WARNING) == 0
    assert dul.command_str(command, dul.ERROR_COMMENT) == "odd"
    assert dul.command_str(command, dul.MOVE_ORIGINATOR_AET) == "ORTHANC"
    assert command[dul.OFFENDING_ELEMENT] == b"\x10\x00\x10\x00"
    assert dul.has_dataset(command)
    assert command[dul.COMMAND_GROUP_LENGTH] == len(raw) - 12
    # and back: pydicom reads ours
    again = decode(io.BytesIO(dul.encode_command(command)), True, True)
    assert again.NumberOfRemainingSuboperations == 3
    assert again.ErrorComment == "odd"


def test_command_helpers_have_safe_defaults() -> None:
    command = dul.decode_command(dul.encode_command({dul.COMMAND_FIELD: 1}))
    assert not dul.has_dataset(command)
    assert dul.command_int(command, dul.STATUS) == 0
    assert dul.command_str(command, dul.AFFECTED_SOP_INSTANCE_UID) == ""


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x00\x00\x01\x02\x00", "ends inside an element header"),
        (b"\x08\x00\x00\x01\x02\x00\x00\x00\x01\x00", "outside group 0000"),
        (b"\x00\x00\x00\x01\x08\x00\x00\x00\x01\x00", "runs past the end"),
        (b"\x00\x00\x00\x01\x04\x00\x00\x00\x01\x00\x00\x00", "is not US"),
        (b"\x00\x00\x10\x01\x02\x00\x00\x00\x01\x00", "without a Command Field"),
    ],
)
def test_command_decoding_refuses_garbage(raw: bytes, message: str) -> None:
    with pytest.raises(dul.DULProtocolError, match=message):
        dul.decode_command(raw)


def test_file_header_makes_a_part10_file_pydicom_reads(tmp_path: object) -> None:
    dataset = Dataset()
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = SOP
    dataset.PatientName = "Header^Test"
    body = encode(dataset, False, True)
    assert body is not None
    raw = file_header(CTImageStorage, SOP, ExplicitVRLittleEndian, "ORTHANC") + body
    read = pydicom.dcmread(io.BytesIO(raw))
    meta = read.file_meta
    assert meta.MediaStorageSOPClassUID == CTImageStorage
    assert meta.MediaStorageSOPInstanceUID == SOP
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.SourceApplicationEntityTitle == "ORTHANC"
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert read.PatientName == "Header^Test"
    # the group length is right: pydicom writes the same meta group
    from pydicom.filewriter import write_file_meta_info

    buffer = pydicom.filebase.DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    assert raw[132:].startswith(buffer.getvalue())


def test_file_header_without_source_and_with_odd_uids() -> None:
    raw = file_header("1.2.3", "1.2.345", "1.2.840.10008.1.2")
    meta = pydicom.dcmread(
        io.BytesIO(raw + b"\x08\x00\x18\x00\x00\x00\x00\x00")
    ).file_meta
    assert "SourceApplicationEntityTitle" not in meta
    assert meta.MediaStorageSOPInstanceUID == "1.2.345"
    assert len(raw) % 2 == 0


def test_a_command_uid_that_is_not_ascii_is_a_protocol_error() -> None:
    command = dul.encode_command(
        {dul.COMMAND_FIELD: dul.C_STORE_RQ, dul.AFFECTED_SOP_INSTANCE_UID: "1.2.3"}
    )
    bad = command.replace(b"1.2.3", b"1.2\xe9.")
    with pytest.raises(dul.DULProtocolError, match="not ASCII"):
        dul.decode_command(bad)
