"""DIMSE-C command sets (dicomtrolley.formats.dimse_commands), read back by
pydicom's Implicit VR Little Endian decoder (through pynetdicom.dsutils) as an
independent check of the encoding, and by our decode_command."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode

from dicomtrolley.formats import dimse_commands as c
from dicomtrolley.formats import dul

CT = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.826.0.1.3680043.8.498.12345"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


def read(command: bytes) -> Dataset:
    dataset = decode(BytesIO(command), True, True)
    assert dataset is not None
    assert dataset.CommandGroupLength == len(command) - 12
    return dataset


def test_c_echo() -> None:
    rq = read(c.c_echo_rq(7))
    assert (rq.CommandField, rq.MessageID, rq.CommandDataSetType) == (0x0030, 7, 0x0101)
    assert rq.AffectedSOPClassUID == c.VERIFICATION_SOP_CLASS
    rsp = read(c.c_echo_rsp(7))
    assert (rsp.CommandField, rsp.MessageIDBeingRespondedTo, rsp.Status) == (
        0x8030,
        7,
        0,
    )
    assert rsp.CommandDataSetType == 0x0101


def test_c_store() -> None:
    rq = read(c.c_store_rq(3, CT, SOP, priority=c.HIGH))
    assert rq.CommandField == 0x0001
    assert (rq.AffectedSOPClassUID, rq.AffectedSOPInstanceUID) == (CT, SOP)
    assert (rq.Priority, rq.CommandDataSetType) == (1, 1)
    assert "MoveOriginatorApplicationEntityTitle" not in rq
    moved = read(
        c.c_store_rq(
            4, CT, SOP, move_originator_aet="TROLLEY", move_originator_message_id=9
        )
    )
    assert moved.MoveOriginatorApplicationEntityTitle == "TROLLEY"
    assert moved.MoveOriginatorMessageID == 9
    rsp = read(c.c_store_rsp(3, CT, SOP, 0xA700, error_comment="disk full"))
    assert (rsp.CommandField, rsp.MessageIDBeingRespondedTo, rsp.Status) == (
        0x8001,
        3,
        0xA700,
    )
    assert (rsp.AffectedSOPInstanceUID, rsp.ErrorComment) == (SOP, "disk full")
    assert rsp.CommandDataSetType == 0x0101


def test_c_find() -> None:
    rq = read(c.c_find_rq(5, FIND))
    assert (rq.CommandField, rq.Priority, rq.CommandDataSetType) == (0x0020, 0, 1)
    pending = read(c.c_find_rsp(5, FIND, c.PENDING))
    assert (pending.CommandField, pending.CommandDataSetType) == (0x8020, 1)
    done = read(c.c_find_rsp(5, FIND, c.SUCCESS))
    assert done.CommandDataSetType == 0x0101
    failed = read(
        c.c_find_rsp(5, FIND, 0xA900, offending_elements=[0x00100010, 0x0020000D])
    )
    assert failed.OffendingElement == [0x00100010, 0x0020000D]
    assert read(c.c_find_rsp(5, FIND, c.PENDING_WARNING)).CommandDataSetType == 1


def test_c_get_and_c_move() -> None:
    rq = read(c.c_get_rq(11, GET, priority=c.LOW))
    assert (rq.CommandField, rq.Priority, rq.CommandDataSetType) == (0x0010, 2, 1)
    move = read(c.c_move_rq(12, MOVE, "STORESCP"))
    assert (move.CommandField, move.MoveDestination) == (0x0021, "STORESCP")
    for builder, field in ((c.c_get_rsp, 0x8010), (c.c_move_rsp, 0x8021)):
        pending = read(builder(11, GET, c.PENDING, remaining=4, completed=1, failed=0))
        assert pending.CommandField == field
        assert (
            pending.NumberOfRemainingSuboperations,
            pending.NumberOfCompletedSuboperations,
            pending.NumberOfFailedSuboperations,
        ) == (4, 1, 0)
        assert "NumberOfWarningSuboperations" not in pending
        final = read(
            builder(11, GET, 0xB000, completed=4, failed=1, warning=0, dataset=True)
        )
        assert final.CommandDataSetType == 1
        assert "NumberOfRemainingSuboperations" not in final


def test_c_cancel() -> None:
    cancel = read(c.c_cancel_rq(11))
    assert (cancel.CommandField, cancel.MessageIDBeingRespondedTo) == (0x0FFF, 11)
    assert cancel.CommandDataSetType == 0x0101
    assert "AffectedSOPClassUID" not in cancel


def test_our_decoder_reads_the_builders() -> None:
    command = dul.decode_command(c.c_move_rsp(2, MOVE, c.PENDING, remaining=3))
    assert dul.command_int(command, dul.COMMAND_FIELD) == dul.C_MOVE_RSP
    assert dul.command_int(command, dul.REMAINING) == 3
    assert dul.has_dataset(command) is False
    assert c.COMMAND_NAMES[dul.command_int(command, dul.COMMAND_FIELD)] == "C-MOVE-RSP"
    store = dul.decode_command(c.c_store_rq(1, CT, SOP, move_originator_aet="ODD"))
    assert dul.command_str(store, dul.MOVE_ORIGINATOR_AET) == "ODD"
    assert dul.has_dataset(store)
    assert c.is_pending(0xFF01) and not c.is_pending(c.CANCEL)


def test_long_error_comments_are_cut_to_their_vr() -> None:
    rsp = read(c.c_store_rsp(1, CT, SOP, 0xC000, error_comment="x" * 100))
    assert rsp.ErrorComment == "x" * 64


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: c.c_echo_rq(65536), "value 65536 is not within 0 to 65535"),
        (lambda: c.c_find_rq(-1, FIND), "value -1"),
        (lambda: c.c_store_rq(1, CT, "1.2.Ä"), "not ASCII"),
        (lambda: c.c_find_rsp(1, FIND, 0xA900, offending_elements=[2**32]), "tag"),
    ],
)
def test_values_out_of_range_raise_a_library_error(build: object, message: str) -> None:
    with pytest.raises(dul.DULValueError, match=message):
        build()  # type: ignore[operator]
