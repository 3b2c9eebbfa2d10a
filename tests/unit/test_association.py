"""A-ASSOCIATE-RQ/AC/RJ on bytes (dicomtrolley.formats.association).

Hand-built PDUs follow the field tables of PS3.8 9.3.2-9.3.4 and PS3.7 D.3.3;
pynetdicom's public PDU classes are the independent encoder and decoder.
DCMTK's encodings are checked in tests/dcmtk.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom import pdu as pynetdicom_pdu
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import PresentationContext as PynetdicomContext

from dicomtrolley.exceptions import PermanentError
from dicomtrolley.formats import association as a
from dicomtrolley.formats import dul

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
STORAGE_SERVICE = "1.2.840.10008.4.2"


def ae(title: str) -> bytes:
    return title.encode().ljust(16, b" ")


# An A-ASSOCIATE-RQ written out field by field (PS3.8 table 9-11 and below).
ECHO_RQ = b"".join(
    (
        b"\x01\x00" + struct.pack(">L", 175),  # type 1, reserved, PDU length
        b"\x00\x01\x00\x00",  # protocol version 1, reserved
        ae("ANY-SCP"),  # called AE title
        ae("ECHOSCU"),  # calling AE title
        bytes(32),  # reserved
        b"\x10\x00\x00\x15" + b"1.2.840.10008.3.1.1.1",  # application context
        b"\x20\x00\x00\x2e\x01\x00\x00\x00",  # presentation context 1 (46 bytes)
        b"\x30\x00\x00\x11" + VERIFICATION.encode(),  # abstract syntax
        b"\x40\x00\x00\x11" + IMPLICIT.encode(),  # transfer syntax
        b"\x50\x00\x00\x1c",  # user information (28 bytes)
        b"\x51\x00\x00\x04\x00\x00\x40\x00",  # maximum length 16384
        b"\x52\x00\x00\x07" + b"1.2.3.4",  # implementation class UID
        b"\x55\x00\x00\x05" + b"ECHO1",  # implementation version name
    )
)

ECHO_RQ_VALUE = a.AssociateRQ(
    "ANY-SCP",
    "ECHOSCU",
    (a.PresentationContext(1, VERIFICATION, (IMPLICIT,)),),
    a.UserInformation(16384, "1.2.3.4", "ECHO1"),
)

# An A-ASSOCIATE-AC (PS3.8 table 9-17): context 1 accepted, 3 refused.
ECHO_AC = b"".join(
    (
        b"\x02\x00" + struct.pack(">L", 68 + 25 + 29 + 12 + 4 + 8 + 11 + 8),
        b"\x00\x01\x00\x00",
        ae("ANY-SCP"),
        ae("ECHOSCU"),
        bytes(32),
        b"\x10\x00\x00\x15" + b"1.2.840.10008.3.1.1.1",
        b"\x21\x00\x00\x19\x01\x00\x00\x00",  # context 1: acceptance
        b"\x40\x00\x00\x11" + IMPLICIT.encode(),
        b"\x21\x00\x00\x08\x03\x00\x03\x00",  # context 3: abstract syntax refused
        b"\x40\x00\x00\x00",  # transfer syntax: not significant, empty
        b"\x50\x00\x00\x1b",  # user information (27 bytes)
        b"\x51\x00\x00\x04\x00\x00\x00\x00",  # maximum length 0: no limit
        b"\x52\x00\x00\x07" + b"1.2.3.5",
        b"\x53\x00\x00\x04\x00\x05\x00\x01",  # async window: 5 invoked, 1 performed
    )
)
ECHO_AC_VALUE = a.AssociateAC(
    "ANY-SCP",
    "ECHOSCU",
    (a.ContextResult(1, 0, IMPLICIT), a.ContextResult(3, 3, "")),
    a.UserInformation(0, "1.2.3.5", async_window=a.AsyncOperationsWindow(5, 1)),
)

# A-ASSOCIATE-RJ (PS3.8 table 9-21): permanent, service user, called AE unknown.
ECHO_RJ = b"\x03\x00\x00\x00\x00\x04\x00\x01\x01\x07"


def full_user_information(**changes: Any) -> a.UserInformation:
    values: dict[str, Any] = {
        "maximum_length": 131072,
        "implementation_class_uid": "1.2.826.0.1.3680043.8.498.1",
        "implementation_version_name": "DTROLLEY_5",
        "async_window": a.AsyncOperationsWindow(0, 1),
        "roles": (a.RoleSelection(CT, False, True), a.RoleSelection(FIND, True, True)),
        "extended_negotiation": (a.ExtendedNegotiation(FIND, b"\x01\x01\x00"),),
        "common_extended_negotiation": (
            a.CommonExtendedNegotiation(CT, STORAGE_SERVICE, ("1.2.3", "1.2.4.5")),
        ),
        "user_identity": a.UserIdentity.username_and_passcode(
            "jane", "s3cret", response=True
        ),
        "unknown": (a.RawSubItem(0x70, b"private"), a.RawSubItem(0x5A, b"")),
    }
    values.update(changes)
    return a.UserInformation(**values)


def full_rq() -> a.AssociateRQ:
    return a.AssociateRQ(
        "PACS",
        "DICOMTROLLEY",
        (
            a.PresentationContext(1, VERIFICATION, (IMPLICIT,)),
            a.PresentationContext(3, CT, (EXPLICIT, IMPLICIT)),
            a.PresentationContext(5, FIND, (EXPLICIT,)),
        ),
        full_user_information(),
    )


# -- exact bytes ---------------------------------------------------------------


def test_rq_encodes_to_the_hand_built_bytes() -> None:
    assert ECHO_RQ_VALUE.encode() == ECHO_RQ
    assert a.AssociateRQ.decode(ECHO_RQ) == ECHO_RQ_VALUE


def test_ac_encodes_to_the_hand_built_bytes() -> None:
    assert ECHO_AC_VALUE.encode() == ECHO_AC
    assert a.AssociateAC.decode(ECHO_AC) == ECHO_AC_VALUE


def test_rj_encodes_to_the_hand_built_bytes() -> None:
    rejection = a.AssociateRJ(1, 1, 7)
    assert rejection.encode() == ECHO_RJ
    assert a.AssociateRJ.decode(ECHO_RJ) == rejection
    assert rejection.describe() == (
        "rejected permanently by the service user: called AE title not recognized"
    )
    assert not rejection.transient
    busy = a.AssociateRJ(2, 3, 1)
    assert busy.transient
    assert "temporary congestion" in busy.describe()
    assert "reason 9" in a.AssociateRJ(1, 1, 9).describe()


def test_user_identity_and_role_sub_items_bytes() -> None:
    info = a.UserInformation(
        roles=(a.RoleSelection("1.2.3", False, True),),
        user_identity=a.UserIdentity.username_and_passcode("ab", "xyz", response=True),
    )
    raw = a.AssociateRQ("A", "B", (), info).encode()
    user_item = raw[raw.index(b"\x50\x00") :]
    assert user_item == b"".join(
        (
            b"\x50\x00\x00\x1c",
            b"\x54\x00\x00\x09\x00\x05" + b"1.2.3" + b"\x00\x01",  # SCU 0, SCP 1
            b"\x58\x00\x00\x0b\x02\x01",  # username and passcode, response wanted
            b"\x00\x02" + b"ab" + b"\x00\x03" + b"xyz",
        )
    )


def test_identity_response_and_common_extended_negotiation_bytes() -> None:
    info = a.UserInformation(
        common_extended_negotiation=(
            a.CommonExtendedNegotiation("1.2", "1.3", ("1.4",)),
        ),
        identity_response=a.UserIdentityResponse(b"ticket"),
    )
    raw = a.AssociateAC("A", "B", (), info).encode()
    assert raw[raw.index(b"\x50\x00") :] == b"".join(
        (
            b"\x50\x00\x00\x21",
            b"\x57\x00\x00\x11",  # sub-item version 0
            b"\x00\x031.2" + b"\x00\x031.3" + b"\x00\x05" + b"\x00\x031.4",
            b"\x59\x00\x00\x08\x00\x06ticket",
        )
    )


def test_uids_padded_by_the_peer_are_read_without_padding() -> None:
    padded = ECHO_RQ.replace(
        b"\x52\x00\x00\x07" + b"1.2.3.4", b"\x52\x00\x00\x08" + b"1.2.3.4\0"
    )
    padded = padded[:2] + struct.pack(">L", 176) + padded[6:]
    padded = padded.replace(b"\x50\x00\x00\x1c", b"\x50\x00\x00\x1d")
    decoded = a.AssociateRQ.decode(padded)
    assert decoded.user_information.implementation_class_uid == "1.2.3.4"


# -- round trips ----------------------------------------------------------------


def test_every_sub_item_survives_a_round_trip() -> None:
    request = full_rq()
    assert a.AssociateRQ.decode(request.encode()) == request
    answer = a.AssociateAC(
        "PACS",
        "DICOMTROLLEY",
        (a.ContextResult(1, 0, IMPLICIT), a.ContextResult(3, 4, EXPLICIT)),
        full_user_information(
            user_identity=None, identity_response=a.UserIdentityResponse(b"\x01jwt")
        ),
    )
    assert a.AssociateAC.decode(answer.encode()) == answer
    assert a.decode_association(answer.encode()) == answer
    assert a.decode_association(request.encode()) == request
    assert a.decode_association(ECHO_RJ) == a.AssociateRJ(1, 1, 7)


@pytest.mark.parametrize(
    "identity",
    [
        a.UserIdentity.username("jane"),
        a.UserIdentity.username_and_passcode("jane", "pässword"),
        a.UserIdentity.kerberos(b"\x00\x01ticket", response=True),
        a.UserIdentity.saml("<saml:Assertion/>"),
        a.UserIdentity.jwt("eyJhbGciOiJIUzI1NiJ9.e30.sig", response=True),
    ],
)
def test_user_identity_kinds_round_trip(identity: a.UserIdentity) -> None:
    request = a.AssociateRQ("A", "B", (), a.UserInformation(user_identity=identity))
    decoded = a.AssociateRQ.decode(request.encode()).user_information.user_identity
    assert decoded == identity
    assert decoded is not None and decoded.kind in range(1, 6)


def test_credentials_stay_out_of_repr() -> None:
    identity = a.UserIdentity.username_and_passcode("jane", "s3cret")
    assert "s3cret" not in repr(full_user_information(user_identity=identity))
    assert "ticket" not in repr(a.UserIdentityResponse(b"ticket"))


# -- AE titles -------------------------------------------------------------------


@pytest.mark.parametrize(
    "title, stored",
    [("PACS", "PACS"), ("  PACS ", "PACS"), ("A" * 16, "A" * 16), ("MY AE", "MY AE")],
)
def test_ae_titles_are_padded_with_spaces(title: str, stored: str) -> None:
    raw = a.AssociateRQ(title, "ME", ()).encode()
    assert raw[10:26] == stored.encode().ljust(16, b" ")
    assert a.AssociateRQ.decode(raw).called_ae_title == stored


@pytest.mark.parametrize(
    "title", ["", "    ", "A" * 17, "BACK\\SLASH", "TAB\tAE", "NUL\0", "ÉTÉ", "DEL\x7f"]
)
def test_invalid_ae_titles_are_refused(title: str) -> None:
    with pytest.raises(dul.DULValueError, match="called AE title") as caught:
        a.AssociateRQ(title, "ME", ()).encode()
    assert isinstance(caught.value, PermanentError)
    with pytest.raises(dul.DULValueError, match="calling AE title"):
        a.AssociateRQ("PACS", title, ()).encode()


def test_decoding_keeps_ae_titles_as_sent_for_the_acceptor_to_judge() -> None:
    raw = ECHO_RQ[:10] + b" " * 16 + ECHO_RQ[26:]
    assert a.AssociateRQ.decode(raw).called_ae_title == ""
    raw = ECHO_RQ[:10] + b"PACS\0\0\0\0\0\0\0\0\0\0\0\0" + ECHO_RQ[26:]
    assert a.AssociateRQ.decode(raw).called_ae_title == "PACS"


@pytest.mark.parametrize(
    "value, message",
    [
        (a.AssociateRQ("A", "B", (a.PresentationContext(2, CT, (IMPLICIT,)),)), "odd"),
        (a.AssociateRQ("A", "B", (a.PresentationContext(1, CT, ()),)), "no transfer"),
        (
            a.AssociateRQ(
                "A",
                "B",
                (
                    a.PresentationContext(1, CT, (IMPLICIT,)),
                    a.PresentationContext(1, FIND, (IMPLICIT,)),
                ),
            ),
            "proposed twice",
        ),
        (
            a.AssociateRQ("A", "B", (a.PresentationContext(1, "1" * 65, (IMPLICIT,)),)),
            "64",
        ),
        (a.AssociateRQ("A", "B", (), a.UserInformation(maximum_length=-1)), "maximum"),
        (
            a.AssociateRQ(
                "A", "B", (), a.UserInformation(implementation_version_name="")
            ),
            "version name",
        ),
        (a.AssociateAC("A", "B", (a.ContextResult(1, 0, ""),)), "transfer syntax"),
        (
            a.AssociateRQ(
                "A",
                "B",
                (),
                a.UserInformation(unknown=(a.RawSubItem(0x70, bytes(70000)),)),
            ),
            "65535",
        ),
        (a.AssociateRJ(1, 1, 256), "A-ASSOCIATE-RJ reason"),
    ],
)
def test_values_that_do_not_fit_are_refused(value: a.Association, message: str) -> None:
    with pytest.raises(dul.DULValueError, match=message):
        value.encode()


def test_presentation_contexts_are_numbered_odd() -> None:
    contexts = a.presentation_contexts([(CT, [EXPLICIT]), (FIND, (IMPLICIT,))])
    assert [c.context_id for c in contexts] == [1, 3]
    assert contexts[1] == a.PresentationContext(3, FIND, (IMPLICIT,))
    assert len(a.presentation_contexts([(CT, [IMPLICIT])] * 128)) == 128
    with pytest.raises(dul.DULValueError, match="at most 128"):
        a.presentation_contexts([(CT, [IMPLICIT])] * 129)


# -- malformed input -------------------------------------------------------------


def with_length(raw: bytes) -> bytes:
    """raw with its PDU length field set to what follows the header."""
    return raw[:2] + struct.pack(">L", len(raw) - 6) + raw[6:]


def test_every_truncation_raises_a_protocol_error() -> None:
    for raw, decode in (
        (ECHO_RQ, a.AssociateRQ.decode),
        (full_rq().encode(), a.AssociateRQ.decode),
        (ECHO_AC, a.AssociateAC.decode),
        (ECHO_RJ, a.AssociateRJ.decode),
    ):
        for cut in range(len(raw)):
            with pytest.raises(dul.DULProtocolError):
                decode(raw[:cut])  # the length field no longer matches
            if cut >= 6:
                # a cut at an item boundary may still be a valid PDU
                with contextlib.suppress(dul.DULProtocolError):
                    decode(with_length(raw[:cut]))


def test_a_pdu_split_at_every_offset_reaches_the_decoder_whole() -> None:
    raw = full_rq().encode()
    for cut in range(len(raw) + 1):
        reader = dul.PDUReader()
        events = reader.feed(raw[:cut]) + reader.feed(raw[cut:])
        assert len(events) == 1 and isinstance(events[0], dul.PDU), cut
        assert a.decode_association(events[0].raw) == full_rq()
    reader = dul.PDUReader()
    pieces = [event for i in range(len(raw)) for event in reader.feed(raw[i : i + 1])]
    assert [type(p) for p in pieces] == [dul.PDU]


RQ_CONTEXT, RQ_USER = 99, 149  # item offsets in ECHO_RQ
AC_FIRST, AC_SECOND, AC_USER = 99, 128, 140  # and in ECHO_AC
MAX_LENGTH = b"\x51\x00\x00\x04\x00\x00\x40\x00"
ASYNC = b"\x53\x00\x00\x04\x00\x05\x00\x01"
APPLICATION = b"\x10\x00\x00\x15" + b"1.2.840.10008.3.1.1.1"
RQ_SYNTAX = b"\x40\x00\x00\x11" + IMPLICIT.encode()


def patch(raw: bytes, old: bytes, new: bytes, *enclosing: int) -> bytes:
    """raw with old replaced by new, the PDU length and the lengths of the items
    starting at the enclosing offsets adjusted to match."""
    assert raw.count(old) == 1
    at = raw.index(old)
    out = bytearray(raw[:at] + new + raw[at + len(old) :])
    for offset in enclosing:
        (length,) = struct.unpack_from(">H", out, offset + 2)
        struct.pack_into(">H", out, offset + 2, length + len(new) - len(old))
    return with_length(bytes(out))


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "cut inside its header"),
        (ECHO_AC, "expected an A-ASSOCIATE-RQ PDU at byte 0, got type 0x02"),
        (ECHO_RQ[:20], "length field at byte 2 says 175 bytes, 14 follow"),
        (with_length(ECHO_RQ[:40]), "shorter than its 68 fixed bytes"),
        (
            patch(ECHO_RQ, b"\x10\x00\x00\x15", b"\x10\x00\x00\xff"),
            "application context item at byte 74: its length 255 runs past the end "
            "of the A-ASSOCIATE-RQ PDU",
        ),
        (with_length(ECHO_RQ + b"\x50\x00"), "item header cut at byte 181"),
        (
            patch(ECHO_RQ, MAX_LENGTH, b"\x51\x00\x00\x03\x00\x40\x00", RQ_USER),
            r"maximum length \(at byte 153\) item: its maximum length at byte 157 "
            "needs 4 bytes, 3 are left",
        ),
        (
            patch(
                ECHO_RQ, MAX_LENGTH, b"\x51\x00\x00\x05\x00\x00\x40\x00\x00", RQ_USER
            ),
            r"maximum length \(at byte 153\) item: 1 unexpected bytes at byte 161",
        ),
        (
            patch(ECHO_RQ, MAX_LENGTH, MAX_LENGTH * 2, RQ_USER),
            "second maximum length sub-item at byte 161",
        ),
        (
            patch(ECHO_RQ, b"\x50\x00\x00\x1c", b"\x50\x00\x00\x1b"),
            "implementation version name item at byte 172: its length 5 runs past "
            "the end of the user information item \\(byte 180\\)",
        ),
        (
            patch(ECHO_RQ, b"\x10\x00\x00\x15", b"\x11\x00\x00\x15"),
            "unexpected item type 0x11 at byte 74",
        ),
        (patch(ECHO_RQ, APPLICATION, b""), "without an application context item"),
        (
            patch(ECHO_RQ, APPLICATION, APPLICATION * 2),
            "second application context item at byte 99",
        ),
        (
            patch(ECHO_RQ, RQ_SYNTAX, RQ_SYNTAX[:-1], RQ_CONTEXT),
            "transfer syntax item at byte 128: its length 17 runs past the end of "
            "the presentation context 1",
        ),
        (
            patch(ECHO_RQ, VERIFICATION.encode(), b"1.2.840.10008.1.\xff"),
            "presentation context 1 item: the abstract syntax at byte 111 is not ASCII",
        ),
        (
            patch(ECHO_RQ, RQ_SYNTAX, b"\x41" + RQ_SYNTAX[1:]),
            "presentation context 1: unexpected sub-item type 0x41 at byte 128",
        ),
        (
            patch(ECHO_RQ, RQ_SYNTAX, b"", RQ_CONTEXT),
            "presentation context 1 at byte 99: no transfer syntax",
        ),
        (
            patch(
                ECHO_RQ, b"\x30\x00\x00\x11" + VERIFICATION.encode(), b"", RQ_CONTEXT
            ),
            "presentation context 1 at byte 99: no abstract syntax",
        ),
        (
            patch(
                ECHO_RQ,
                ECHO_RQ[RQ_CONTEXT:RQ_USER],
                b"\x20\x00\x00\x03\x01\x00\x00",
            ),
            "presentation context item: its reserved bytes at byte 104 needs 3 bytes, "
            "2 are left",
        ),
    ],
)
def test_malformed_rq_raises_a_protocol_error_naming_the_place(
    raw: bytes, message: str
) -> None:
    with pytest.raises(dul.DULProtocolError, match=message) as caught:
        a.AssociateRQ.decode(raw)
    assert isinstance(caught.value, PermanentError)


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            patch(
                ECHO_AC,
                b"\x40\x00\x00\x11" + IMPLICIT.encode(),
                b"\x40\x00\x00\x00",
                AC_FIRST,
            ),
            "presentation context result 1 at byte 99: accepted without a transfer",
        ),
        (
            patch(ECHO_AC, b"\x40\x00\x00\x00", b"\x40\x00\x00\x00" * 2, AC_SECOND),
            "presentation context result 3: unexpected sub-item type 0x40 at byte 140",
        ),
        (
            patch(ECHO_AC, ASYNC, b"\x53\x00\x00\x02\x00\x05", AC_USER),
            r"asynchronous operations window \(at byte 163\) item: its operations "
            "performed at byte 169",
        ),
        (
            patch(ECHO_AC, ASYNC, b"\x54\x00\x00\x06\x00\x09\x31\x2e\x32\x00", AC_USER),
            r"SCP/SCU role selection \(at byte 163\) item: its SOP class UID at byte "
            "169 needs 9 bytes, 4 are left",
        ),
        (
            patch(ECHO_AC, ASYNC, b"\x59\x00\x00\x03\x00\x05\x00", AC_USER),
            "its server response at byte 169 needs 5 bytes, 1 are left",
        ),
        (
            patch(
                ECHO_AC,
                ASYNC,
                b"\x57\x00\x00\x0c\x00\x031.2\x00\x031.3\x00\x09",
                AC_USER,
            ),
            "its related general SOP class identification at byte 179 needs 9 bytes, 0",
        ),
        (
            patch(
                ECHO_AC,
                ASYNC,
                b"\x57\x00\x00\x0f\x00\x031.2\x00\x031.3\x00\x03\x00\x05x",
                AC_USER,
            ),
            "its related UID at byte 181 needs 5 bytes, 1 are left",
        ),
        (
            patch(ECHO_AC, ASYNC, b"\x58\x00\x00\x05\x01\x00\x00\x01x", AC_USER),
            "its secondary field length length at byte 172|secondary field length",
        ),
        (with_length(ECHO_RJ + b"\x00"), "A-ASSOCIATE-RJ PDU of 5 bytes"),
        (ECHO_RJ[:-1], "A-ASSOCIATE-RJ PDU length field at byte 2 says 4 bytes, 3"),
    ],
)
def test_malformed_ac_raises_a_protocol_error_naming_the_place(
    raw: bytes, message: str
) -> None:
    with pytest.raises(dul.DULProtocolError, match=message):
        a.decode_association(raw)


def test_a_refused_context_without_transfer_syntax_is_read() -> None:
    raw = patch(ECHO_AC, b"\x40\x00\x00\x00", b"", AC_SECOND)
    assert a.AssociateAC.decode(raw).results[1] == a.ContextResult(3, 3, "")


def test_decode_association_refuses_other_pdus() -> None:
    with pytest.raises(dul.DULProtocolError, match="got PDU type 0x05"):
        a.decode_association(dul.release_rq())
    with pytest.raises(dul.DULProtocolError, match="got nothing"):
        a.decode_association(b"")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_garbage_only_ever_raises_protocol_errors(data: st.DataObject) -> None:
    raw = bytearray(full_rq().encode())
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(6, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(dul.DULProtocolError):
        a.AssociateRQ.decode(bytes(raw))


# -- hypothesis round trips -------------------------------------------------------

uids = st.from_regex(r"[12](\.[1-9][0-9]{0,8}){1,6}", fullmatch=True)
ae_titles = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"),
    min_size=1,
    max_size=16,
)
roles = st.builds(a.RoleSelection, uids, st.booleans(), st.booleans())
identities = st.builds(
    a.UserIdentity,
    st.integers(1, 5),
    st.binary(max_size=40),
    st.binary(max_size=40),
    st.booleans(),
)
user_information = st.builds(
    a.UserInformation,
    maximum_length=st.none() | st.integers(0, 2**32 - 1),
    implementation_class_uid=st.none() | uids,
    implementation_version_name=st.none() | ae_titles,
    async_window=st.none()
    | st.builds(a.AsyncOperationsWindow, st.integers(0, 65535), st.integers(0, 65535)),
    roles=st.lists(roles, max_size=3).map(tuple),
    extended_negotiation=st.lists(
        st.builds(a.ExtendedNegotiation, uids, st.binary(max_size=8)), max_size=2
    ).map(tuple),
    common_extended_negotiation=st.lists(
        st.builds(
            a.CommonExtendedNegotiation,
            uids,
            uids,
            st.lists(uids, max_size=3).map(tuple),
        ),
        max_size=2,
    ).map(tuple),
    user_identity=st.none() | identities,
    identity_response=st.none()
    | st.builds(a.UserIdentityResponse, st.binary(max_size=20)),
    unknown=st.lists(
        st.builds(a.RawSubItem, st.integers(0x5A, 0xFF), st.binary(max_size=10)),
        max_size=2,
    ).map(tuple),
)


@st.composite
def requests(draw: st.DrawFn) -> a.AssociateRQ:
    count = draw(st.integers(0, 5))
    contexts = tuple(
        a.PresentationContext(
            2 * i + 1, draw(uids), tuple(draw(st.lists(uids, min_size=1, max_size=3)))
        )
        for i in range(count)
    )
    return a.AssociateRQ(
        draw(ae_titles), draw(ae_titles), contexts, draw(user_information), draw(uids)
    )


@st.composite
def answers(draw: st.DrawFn) -> a.AssociateAC:
    count = draw(st.integers(0, 5))
    results = []
    for i in range(count):
        result = draw(st.integers(0, 4))
        syntax = draw(uids) if result == 0 else draw(st.just("") | uids)
        results.append(a.ContextResult(2 * i + 1, result, syntax))
    return a.AssociateAC(
        draw(ae_titles), draw(ae_titles), tuple(results), draw(user_information)
    )


@settings(max_examples=200, deadline=None)
@given(requests())
def test_any_request_round_trips(request: a.AssociateRQ) -> None:
    assert a.AssociateRQ.decode(request.encode()) == request


@settings(max_examples=200, deadline=None)
@given(answers())
def test_any_answer_round_trips(answer: a.AssociateAC) -> None:
    assert a.AssociateAC.decode(answer.encode()) == answer


@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
def test_any_rejection_round_trips(result: int, source: int, reason: int) -> None:
    rejection = a.AssociateRJ(result, source, reason)
    assert a.AssociateRJ.decode(rejection.encode()) == rejection


# -- against pynetdicom -------------------------------------------------------------


def pynetdicom_primitive(answer: bool) -> A_ASSOCIATE:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "DICOMTROLLEY"
    primitive.called_ae_title = "PACS"
    contexts = []
    for context_id, abstract, syntaxes, result in (
        (1, VERIFICATION, [IMPLICIT], 0),
        (3, CT, [EXPLICIT, IMPLICIT], 0),
        (5, FIND, [EXPLICIT], 3),
    ):
        context = PynetdicomContext()
        context.context_id = context_id
        context.abstract_syntax = abstract
        context.transfer_syntax = syntaxes[:1] if answer else syntaxes
        if answer:
            context.result = result
        contexts.append(context)
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 32768
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.2"
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = "PYNETDICOM_204"
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 3
    window.maximum_number_operations_performed = 2
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = CT
    role.scu_role = not answer
    role.scp_role = True
    identity = UserIdentityNegotiation()
    items: list[Any] = [maximum, implementation, version, window, role]
    if answer:
        primitive.result = 0
        primitive.presentation_context_definition_results_list = contexts
        identity.server_response = b"welcome"
        items.append(identity)
    else:
        primitive.presentation_context_definition_list = contexts
        identity.user_identity_type = 2
        identity.positive_response_requested = True
        identity.primary_field = b"jane"
        identity.secondary_field = b"s3cret"
        extended = SOPClassExtendedNegotiation()
        extended.sop_class_uid = FIND
        extended.service_class_application_information = b"\x01\x00\x01"
        common = SOPClassCommonExtendedNegotiation()
        common.sop_class_uid = CT
        common.service_class_uid = STORAGE_SERVICE
        common.related_general_sop_class_identification = ["1.2.3", "1.2.4"]
        items += [identity, extended, common]
    primitive.user_information = items
    return primitive


def expected_user_information(answer: bool) -> a.UserInformation:
    base = a.UserInformation(
        32768,
        "1.2.826.0.1.3680043.9.3811.2",
        "PYNETDICOM_204",
        a.AsyncOperationsWindow(3, 2),
        (a.RoleSelection(CT, not answer, True),),
    )
    if answer:
        return a.UserInformation(
            **{
                **_fields(base),
                "identity_response": a.UserIdentityResponse(b"welcome"),
            }
        )
    return a.UserInformation(
        **{
            **_fields(base),
            "user_identity": a.UserIdentity(2, b"jane", b"s3cret", True),
            "extended_negotiation": (a.ExtendedNegotiation(FIND, b"\x01\x00\x01"),),
            "common_extended_negotiation": (
                a.CommonExtendedNegotiation(CT, STORAGE_SERVICE, ("1.2.3", "1.2.4")),
            ),
        }
    )


def _fields(info: a.UserInformation) -> dict[str, Any]:
    return {name: getattr(info, name) for name in info.__slots__}  # type: ignore[attr-defined]


def test_pynetdicom_rq_decodes_with_ours() -> None:
    pdu = pynetdicom_pdu.A_ASSOCIATE_RQ()
    pdu.from_primitive(pynetdicom_primitive(answer=False))
    ours = a.AssociateRQ.decode(bytes(pdu.encode()))
    assert ours == a.AssociateRQ(
        "PACS",
        "DICOMTROLLEY",
        (
            a.PresentationContext(1, VERIFICATION, (IMPLICIT,)),
            a.PresentationContext(3, CT, (EXPLICIT, IMPLICIT)),
            a.PresentationContext(5, FIND, (EXPLICIT,)),
        ),
        expected_user_information(answer=False),
    )


def test_pynetdicom_ac_decodes_with_ours() -> None:
    pdu = pynetdicom_pdu.A_ASSOCIATE_AC()
    pdu.from_primitive(pynetdicom_primitive(answer=True))
    ours = a.AssociateAC.decode(bytes(pdu.encode()))
    assert ours.results == (
        a.ContextResult(1, 0, IMPLICIT),
        a.ContextResult(3, 0, EXPLICIT),
        a.ContextResult(5, 3, EXPLICIT),
    )
    assert ours.user_information == expected_user_information(answer=True)
    assert ours.application_context_name == "1.2.840.10008.3.1.1.1"


def test_our_rq_decodes_in_pynetdicom() -> None:
    pdu = pynetdicom_pdu.A_ASSOCIATE_RQ()
    pdu.decode(_without_unknown())
    primitive = pdu.to_primitive()
    assert primitive.called_ae_title == "PACS"
    assert primitive.calling_ae_title == "DICOMTROLLEY"
    assert [
        (c.context_id, c.abstract_syntax, c.transfer_syntax)
        for c in primitive.presentation_context_definition_list
    ] == [
        (1, VERIFICATION, [IMPLICIT]),
        (3, CT, [EXPLICIT, IMPLICIT]),
        (5, FIND, [EXPLICIT]),
    ]
    by_type = {type(item).__name__: item for item in primitive.user_information}
    assert by_type["MaximumLengthNotification"].maximum_length_received == 131072
    assert (
        by_type["ImplementationVersionNameNotification"].implementation_version_name
        == "DTROLLEY_5"
    )
    window = by_type["AsynchronousOperationsWindowNegotiation"]
    assert (
        window.maximum_number_operations_invoked,
        window.maximum_number_operations_performed,
    ) == (0, 1)
    identity = by_type["UserIdentityNegotiation"]
    assert (
        identity.user_identity_type,
        identity.primary_field,
        identity.secondary_field,
    ) == (
        2,
        b"jane",
        b"s3cret",
    )
    assert identity.positive_response_requested is True
    roles = [
        (r.sop_class_uid, r.scu_role, r.scp_role)
        for r in primitive.user_information
        if isinstance(r, SCP_SCU_RoleSelectionNegotiation)
    ]
    assert roles == [(CT, False, True), (FIND, True, True)]
    common = by_type["SOPClassCommonExtendedNegotiation"]
    assert common.related_general_sop_class_identification == ["1.2.3", "1.2.4.5"]
    extended = by_type["SOPClassExtendedNegotiation"]
    assert extended.service_class_application_information == b"\x01\x01\x00"


def _without_unknown() -> bytes:
    """full_rq() without its unknown sub-items (pynetdicom cannot read those)."""
    request = full_rq()
    info = a.UserInformation(**{**_fields(request.user_information), "unknown": ()})
    return a.AssociateRQ(
        request.called_ae_title,
        request.calling_ae_title,
        request.presentation_contexts,
        info,
    ).encode()


def test_our_ac_and_rj_decode_in_pynetdicom() -> None:
    pdu = pynetdicom_pdu.A_ASSOCIATE_AC()
    pdu.decode(ECHO_AC)
    primitive = pdu.to_primitive()
    results = primitive.presentation_context_definition_results_list
    assert [(c.context_id, c.result) for c in results] == [(1, 0), (3, 3)]
    assert results[0].transfer_syntax == [IMPLICIT]
    assert primitive.maximum_length_received == 0
    rejection = pynetdicom_pdu.A_ASSOCIATE_RJ()
    rejection.decode(a.AssociateRJ(2, 3, 1).encode())
    assert (rejection.result, rejection.source, rejection.reason_diagnostic) == (
        2,
        3,
        1,
    )
