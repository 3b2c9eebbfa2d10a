"""A-ASSOCIATE-RQ, -AC and -RJ PDUs (PS3.8 9.3.2-9.3.4), sans-I/O.

Each PDU is a frozen value object with an ``encode()`` method and a
``decode(raw)`` class method; ``raw`` is the whole PDU, header included, as
:class:`~dicomtrolley.formats.dul.PDUReader` hands it over (``PDU.raw``).
:func:`decode_association` picks the class from the PDU type.

The user information item carries the sub-items of PS3.7 D.3.3 and PS3.8 D.1:
maximum length, implementation class UID and version name, asynchronous
operations window, SCP/SCU role selection, SOP class (common) extended
negotiation, and user identity (request and server response). A sub-item of
another type is kept as a :class:`RawSubItem` and encoded again unchanged.

Decoding is strict about structure and lenient about values: a length that does
not fit, a missing application context or a repeated maximum length raise
:class:`~dicomtrolley.formats.dul.DULProtocolError` naming the item and its
byte offset in the PDU; AE titles and result codes are returned as sent, for
the acceptor to answer with an A-ASSOCIATE-RJ rather than an abort. Encoding
validates what we send (:func:`check_ae_title`, UID lengths, context IDs) and
raises :class:`~dicomtrolley.formats.dul.DULValueError`.

Negotiation over these objects is in :mod:`dicomtrolley.formats.negotiation`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from dicomtrolley.formats.dul import (
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    DULProtocolError,
    DULValueError,
)

#: PS3.7 A.2.1: the DICOM application context.
APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
#: Bit 0 of the protocol version field: the only version there is (PS3.8 9.3.2).
PROTOCOL_VERSION = 0x0001

# Presentation context results (PS3.8 table 9-18)
ACCEPTANCE = 0
USER_REJECTION = 1
NO_REASON = 2
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4
RESULT_TEXT = {
    ACCEPTANCE: "acceptance",
    USER_REJECTION: "user rejection",
    NO_REASON: "no reason (provider rejection)",
    ABSTRACT_SYNTAX_NOT_SUPPORTED: "abstract syntax not supported",
    TRANSFER_SYNTAXES_NOT_SUPPORTED: "transfer syntaxes not supported",
}

# A-ASSOCIATE-RJ fields (PS3.8 table 9-21)
REJECTED_PERMANENT = 1
REJECTED_TRANSIENT = 2
SOURCE_SERVICE_USER = 1
SOURCE_ACSE = 2
SOURCE_PRESENTATION = 3
_RJ_SOURCES = {
    SOURCE_SERVICE_USER: "the service user",
    SOURCE_ACSE: "the service provider (ACSE)",
    SOURCE_PRESENTATION: "the service provider (presentation)",
}
_RJ_REASONS = {
    (SOURCE_SERVICE_USER, 1): "no reason given",
    (SOURCE_SERVICE_USER, 2): "application context name not supported",
    (SOURCE_SERVICE_USER, 3): "calling AE title not recognized",
    (SOURCE_SERVICE_USER, 7): "called AE title not recognized",
    (SOURCE_ACSE, 1): "no reason given",
    (SOURCE_ACSE, 2): "protocol version not supported",
    (SOURCE_PRESENTATION, 1): "temporary congestion",
    (SOURCE_PRESENTATION, 2): "local limit exceeded",
}

# User identity types (PS3.7 D.3.3.7)
USERNAME = 1
USERNAME_AND_PASSCODE = 2
KERBEROS = 3
SAML = 4
JWT = 5

# Item types (PS3.8 9.3.2, PS3.7 D.3.3)
APPLICATION_CONTEXT_ITEM = 0x10
CONTEXT_RQ_ITEM = 0x20
CONTEXT_AC_ITEM = 0x21
ABSTRACT_SYNTAX_ITEM = 0x30
TRANSFER_SYNTAX_ITEM = 0x40
USER_INFORMATION_ITEM = 0x50
MAXIMUM_LENGTH_ITEM = 0x51
IMPLEMENTATION_CLASS_UID_ITEM = 0x52
ASYNC_WINDOW_ITEM = 0x53
ROLE_SELECTION_ITEM = 0x54
IMPLEMENTATION_VERSION_ITEM = 0x55
EXTENDED_NEGOTIATION_ITEM = 0x56
COMMON_EXTENDED_NEGOTIATION_ITEM = 0x57
USER_IDENTITY_RQ_ITEM = 0x58
USER_IDENTITY_AC_ITEM = 0x59

_ITEM_NAMES = {
    APPLICATION_CONTEXT_ITEM: "application context",
    CONTEXT_RQ_ITEM: "presentation context",
    CONTEXT_AC_ITEM: "presentation context result",
    ABSTRACT_SYNTAX_ITEM: "abstract syntax",
    TRANSFER_SYNTAX_ITEM: "transfer syntax",
    USER_INFORMATION_ITEM: "user information",
    MAXIMUM_LENGTH_ITEM: "maximum length",
    IMPLEMENTATION_CLASS_UID_ITEM: "implementation class UID",
    ASYNC_WINDOW_ITEM: "asynchronous operations window",
    ROLE_SELECTION_ITEM: "SCP/SCU role selection",
    IMPLEMENTATION_VERSION_ITEM: "implementation version name",
    EXTENDED_NEGOTIATION_ITEM: "SOP class extended negotiation",
    COMMON_EXTENDED_NEGOTIATION_ITEM: "SOP class common extended negotiation",
    USER_IDENTITY_RQ_ITEM: "user identity",
    USER_IDENTITY_AC_ITEM: "user identity server response",
}

_PDU_HEADER = struct.Struct(">BxL")
_FIXED = struct.Struct(">H2x16s16s32x")  # version, reserved, called, calling, reserved
_RJ_BODY = struct.Struct(">xBBB")
_ITEM = struct.Struct(">BxH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">L")
_HEADERS = _PDU_HEADER.size + _FIXED.size  # bytes before the first item

_MAX_AE_TITLE = 16
_MAX_UID = 64


def check_ae_title(title: str, what: str = "AE title") -> str:
    """title without its non-significant spaces, if it is a valid AE title.

    PS3.5 6.2 (VR AE): 1 to 16 characters of the default repertoire, no
    backslash and no control character, not only spaces. Raises
    :class:`DULValueError` otherwise.
    """
    stripped = title.strip(" ")
    if not stripped or len(stripped) > _MAX_AE_TITLE:
        raise DULValueError(f"{what} {title!r} must be 1 to 16 characters")
    if "\\" in stripped or not all(" " <= char <= "~" for char in stripped):
        raise DULValueError(
            f"{what} {title!r} may only hold printable ASCII characters, no backslash"
        )
    return stripped


# -- value objects -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PresentationContext:
    """A proposed presentation context (item 0x20): ID, abstract syntax and the
    transfer syntaxes the requestor offers for it."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "transfer_syntaxes", tuple(self.transfer_syntaxes))


@dataclass(frozen=True, slots=True)
class ContextResult:
    """The acceptor's answer for one presentation context (item 0x21).

    ``transfer_syntax`` is the one chosen when ``result`` is
    :data:`ACCEPTANCE`; otherwise it is not significant (PS3.8 9.3.3.2).
    """

    context_id: int
    result: int
    transfer_syntax: str = ""

    @property
    def accepted(self) -> bool:
        return self.result == ACCEPTANCE


@dataclass(frozen=True, slots=True)
class RoleSelection:
    """SCP/SCU role selection (item 0x54, PS3.7 D.3.3.4) for one SOP class.

    The roles are always the association requestor's: in an A-ASSOCIATE-RQ the
    roles it proposes to take, in an A-ASSOCIATE-AC the ones the acceptor
    agrees to.
    """

    sop_class_uid: str
    scu: bool
    scp: bool


@dataclass(frozen=True, slots=True)
class AsyncOperationsWindow:
    """Asynchronous operations window (item 0x53, PS3.7 D.3.3.3); 0: unlimited."""

    invoked: int = 1
    performed: int = 1


@dataclass(frozen=True, slots=True)
class ExtendedNegotiation:
    """SOP class extended negotiation (item 0x56, PS3.7 D.3.3.5): the service
    class application information, as the service class defines it."""

    sop_class_uid: str
    info: bytes


@dataclass(frozen=True, slots=True)
class CommonExtendedNegotiation:
    """SOP class common extended negotiation (item 0x57, PS3.7 D.3.3.6)."""

    sop_class_uid: str
    service_class_uid: str
    related_general_sop_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        related = tuple(self.related_general_sop_classes)
        object.__setattr__(self, "related_general_sop_classes", related)


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """User identity negotiation, request (item 0x58, PS3.7 D.3.3.7.1).

    Build it with :meth:`username`, :meth:`username_and_passcode`,
    :meth:`kerberos`, :meth:`saml` or :meth:`jwt`. The fields stay out of
    ``repr`` (they are credentials).
    """

    kind: int
    primary: bytes = field(repr=False)
    secondary: bytes = field(default=b"", repr=False)
    positive_response_requested: bool = False

    @classmethod
    def username(cls, name: str, *, response: bool = False) -> UserIdentity:
        return cls(USERNAME, name.encode("utf-8"), b"", response)

    @classmethod
    def username_and_passcode(
        cls, name: str, passcode: str, *, response: bool = False
    ) -> UserIdentity:
        return cls(
            USERNAME_AND_PASSCODE,
            name.encode("utf-8"),
            passcode.encode("utf-8"),
            response,
        )

    @classmethod
    def kerberos(cls, ticket: bytes, *, response: bool = False) -> UserIdentity:
        return cls(KERBEROS, bytes(ticket), b"", response)

    @classmethod
    def saml(cls, assertion: str | bytes, *, response: bool = False) -> UserIdentity:
        value = assertion.encode("utf-8") if isinstance(assertion, str) else assertion
        return cls(SAML, bytes(value), b"", response)

    @classmethod
    def jwt(cls, token: str | bytes, *, response: bool = False) -> UserIdentity:
        value = token.encode("ascii") if isinstance(token, str) else token
        return cls(JWT, bytes(value), b"", response)


@dataclass(frozen=True, slots=True)
class UserIdentityResponse:
    """User identity negotiation, server response (item 0x59, PS3.7 D.3.3.7.2):
    empty for a username, the ticket, SAML response or JWT otherwise."""

    server_response: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class RawSubItem:
    """A user information sub-item of a type not listed above, kept as sent."""

    item_type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class UserInformation:
    """The user information item (0x50). ``None`` or empty: sub-item absent.

    ``maximum_length`` is the largest P-DATA-TF variable field the sender takes
    (0: no limit); it and ``implementation_class_uid`` are required in every
    A-ASSOCIATE-RQ and -AC we send.
    """

    maximum_length: int | None = None
    implementation_class_uid: str | None = None
    implementation_version_name: str | None = None
    async_window: AsyncOperationsWindow | None = None
    roles: tuple[RoleSelection, ...] = ()
    extended_negotiation: tuple[ExtendedNegotiation, ...] = ()
    common_extended_negotiation: tuple[CommonExtendedNegotiation, ...] = ()
    user_identity: UserIdentity | None = None
    identity_response: UserIdentityResponse | None = None
    unknown: tuple[RawSubItem, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "roles",
            "extended_negotiation",
            "common_extended_negotiation",
            "unknown",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def role_for(self, sop_class_uid: str) -> RoleSelection | None:
        """The first role selection for sop_class_uid, if any."""
        for role in self.roles:
            if role.sop_class_uid == sop_class_uid:
                return role
        return None


@dataclass(frozen=True, slots=True)
class AssociateRQ:
    """A-ASSOCIATE-RQ (PS3.8 9.3.2). AE titles without their padding."""

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContext, ...]
    user_information: UserInformation = UserInformation()
    application_context_name: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        contexts = tuple(self.presentation_contexts)
        object.__setattr__(self, "presentation_contexts", contexts)

    def context(self, context_id: int) -> PresentationContext | None:
        for context in self.presentation_contexts:
            if context.context_id == context_id:
                return context
        return None

    def encode(self) -> bytes:
        """The PDU's bytes; AE titles are checked (:func:`check_ae_title`)."""
        called = check_ae_title(self.called_ae_title, "called AE title")
        calling = check_ae_title(self.calling_ae_title, "calling AE title")
        items = [_application_context(self.application_context_name)]
        seen: set[int] = set()
        for context in self.presentation_contexts:
            if context.context_id in seen:
                raise DULValueError(
                    f"presentation context ID {context.context_id} is proposed twice"
                )
            seen.add(context.context_id)
            items.append(_encode_context_rq(context))
        items.append(_encode_user_information(self.user_information))
        return _encode_pdu(
            A_ASSOCIATE_RQ, self.protocol_version, called, calling, items
        )

    @classmethod
    def decode(cls, raw: bytes | bytearray | memoryview) -> AssociateRQ:
        data, version, called, calling = _decode_fixed(raw, A_ASSOCIATE_RQ)
        name, contexts, info = _decode_items(data, CONTEXT_RQ_ITEM)
        return cls(
            called,
            calling,
            tuple(c for c in contexts if isinstance(c, PresentationContext)),
            info,
            name,
            version,
        )


@dataclass(frozen=True, slots=True)
class AssociateAC:
    """A-ASSOCIATE-AC (PS3.8 9.3.3).

    The AE title fields are reserved in the AC: sent back as the RQ had them,
    not tested on receipt.
    """

    called_ae_title: str
    calling_ae_title: str
    results: tuple[ContextResult, ...]
    user_information: UserInformation = UserInformation()
    application_context_name: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", tuple(self.results))

    def encode(self) -> bytes:
        items = [_application_context(self.application_context_name)]
        items += [_encode_context_ac(result) for result in self.results]
        items.append(_encode_user_information(self.user_information))
        return _encode_pdu(
            A_ASSOCIATE_AC,
            self.protocol_version,
            _ae_field(self.called_ae_title),
            _ae_field(self.calling_ae_title),
            items,
        )

    @classmethod
    def decode(cls, raw: bytes | bytearray | memoryview) -> AssociateAC:
        data, version, called, calling = _decode_fixed(raw, A_ASSOCIATE_AC)
        name, results, info = _decode_items(data, CONTEXT_AC_ITEM)
        return cls(
            called,
            calling,
            tuple(r for r in results if isinstance(r, ContextResult)),
            info,
            name,
            version,
        )


@dataclass(frozen=True, slots=True)
class AssociateRJ:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source and reason/diagnostic."""

    result: int = REJECTED_PERMANENT
    source: int = SOURCE_SERVICE_USER
    reason: int = 1

    @property
    def transient(self) -> bool:
        """Whether the peer said to try again later (rejected-transient)."""
        return self.result == REJECTED_TRANSIENT

    def describe(self) -> str:
        """E.g. 'rejected permanently by the service user: called AE title not
        recognized'."""
        how = {
            REJECTED_PERMANENT: "permanently",
            REJECTED_TRANSIENT: "for now (transient)",
        }.get(self.result, f"(result {self.result})")
        source = _RJ_SOURCES.get(self.source, f"source {self.source}")
        reason = _RJ_REASONS.get((self.source, self.reason), f"reason {self.reason}")
        return f"rejected {how} by {source}: {reason}"

    def encode(self) -> bytes:
        for name in ("result", "source", "reason"):
            _check_range(getattr(self, name), 0xFF, f"A-ASSOCIATE-RJ {name}")
        return _PDU_HEADER.pack(A_ASSOCIATE_RJ, _RJ_BODY.size) + _RJ_BODY.pack(
            self.result, self.source, self.reason
        )

    @classmethod
    def decode(cls, raw: bytes | bytearray | memoryview) -> AssociateRJ:
        data = _checked_pdu(raw, A_ASSOCIATE_RJ, _RJ_BODY.size)
        if len(data) != _PDU_HEADER.size + _RJ_BODY.size:
            raise DULProtocolError(
                f"A-ASSOCIATE-RJ PDU of {len(data) - _PDU_HEADER.size} bytes at "
                f"byte {_PDU_HEADER.size}, not {_RJ_BODY.size}"
            )
        return cls(*_RJ_BODY.unpack_from(data, _PDU_HEADER.size))


Association = AssociateRQ | AssociateAC | AssociateRJ


def decode_association(raw: bytes | bytearray | memoryview) -> Association:
    """The A-ASSOCIATE-RQ, -AC or -RJ in raw (a whole PDU), by its type."""
    data = bytes(raw)
    kind = data[0] if data else None
    if kind == A_ASSOCIATE_RQ:
        return AssociateRQ.decode(data)
    if kind == A_ASSOCIATE_AC:
        return AssociateAC.decode(data)
    if kind == A_ASSOCIATE_RJ:
        return AssociateRJ.decode(data)
    what = "nothing" if kind is None else f"PDU type 0x{kind:02X}"
    raise DULProtocolError(f"expected an A-ASSOCIATE PDU at byte 0, got {what}")


# -- encoding ------------------------------------------------------------------


def _check_range(value: int, top: int, what: str) -> int:
    if not 0 <= value <= top:
        raise DULValueError(f"{what} {value} is not within 0 to {top}")
    return value


def _item(item_type: int, body: bytes) -> bytes:
    if len(body) > 0xFFFF:
        raise DULValueError(
            f"{_ITEM_NAMES.get(item_type, 'sub-item')} item of {len(body)} bytes "
            "is longer than the 65535 an item can hold"
        )
    return _ITEM.pack(item_type, len(body)) + body


def _uid(uid: str, what: str, *, empty: bool = False) -> bytes:
    """A UID as the upper layer carries it: ASCII, no padding (PS3.8 annex F)."""
    if not uid and empty:
        return b""
    if not uid or len(uid) > _MAX_UID or not uid.isascii() or not uid.isprintable():
        raise DULValueError(f"{what} {uid!r} is not a UID of 1 to 64 ASCII characters")
    return uid.encode("ascii")


def _prefixed(value: bytes, what: str) -> bytes:
    if len(value) > 0xFFFF:
        raise DULValueError(f"{what} of {len(value)} bytes is too long")
    return _U16.pack(len(value)) + value


def _ae_field(title: str) -> bytes:
    """A reserved AE title field of an AC: the RQ's value, not checked."""
    return title.encode("ascii", "replace")[:_MAX_AE_TITLE]


def _encode_pdu(
    pdu_type: int,
    version: int,
    called: str | bytes,
    calling: str | bytes,
    items: list[bytes],
) -> bytes:
    _check_range(version, 0xFFFF, "protocol version")
    fields = [
        (value.encode("ascii") if isinstance(value, str) else value).ljust(16, b" ")
        for value in (called, calling)
    ]
    body = _FIXED.pack(version, fields[0], fields[1]) + b"".join(items)
    return _PDU_HEADER.pack(pdu_type, len(body)) + body


def _application_context(name: str) -> bytes:
    return _item(APPLICATION_CONTEXT_ITEM, _uid(name, "application context name"))


def _context_id(context_id: int) -> int:
    if not (1 <= context_id <= 255 and context_id % 2):
        raise DULValueError(
            f"presentation context ID {context_id} is not an odd number 1 to 255"
        )
    return context_id


def _encode_context_rq(context: PresentationContext) -> bytes:
    if not context.transfer_syntaxes:
        raise DULValueError(
            f"presentation context {context.context_id} "
            f"({context.abstract_syntax}) proposes no transfer syntax"
        )
    body = bytes((_context_id(context.context_id), 0, 0, 0))
    body += _item(
        ABSTRACT_SYNTAX_ITEM, _uid(context.abstract_syntax, "abstract syntax")
    )
    for syntax in context.transfer_syntaxes:
        body += _item(TRANSFER_SYNTAX_ITEM, _uid(syntax, "transfer syntax"))
    return _item(CONTEXT_RQ_ITEM, body)


def _encode_context_ac(result: ContextResult) -> bytes:
    _check_range(result.result, 0xFF, "presentation context result")
    syntax = _uid(result.transfer_syntax, "transfer syntax", empty=not result.accepted)
    body = bytes((_context_id(result.context_id), 0, result.result, 0))
    return _item(CONTEXT_AC_ITEM, body + _item(TRANSFER_SYNTAX_ITEM, syntax))


def _encode_user_information(info: UserInformation) -> bytes:
    return _item(USER_INFORMATION_ITEM, b"".join(_sub_items(info)))


def _sub_items(info: UserInformation) -> Iterator[bytes]:
    if info.maximum_length is not None:
        _check_range(info.maximum_length, 0xFFFFFFFF, "maximum length")
        yield _item(MAXIMUM_LENGTH_ITEM, _U32.pack(info.maximum_length))
    if info.implementation_class_uid is not None:
        uid = _uid(info.implementation_class_uid, "implementation class UID")
        yield _item(IMPLEMENTATION_CLASS_UID_ITEM, uid)
    if info.async_window is not None:
        window = info.async_window
        _check_range(window.invoked, 0xFFFF, "operations invoked")
        _check_range(window.performed, 0xFFFF, "operations performed")
        yield _item(
            ASYNC_WINDOW_ITEM, _U16.pack(window.invoked) + _U16.pack(window.performed)
        )
    for role in info.roles:
        uid = _uid(role.sop_class_uid, "role selection SOP class UID")
        body = _U16.pack(len(uid)) + uid + bytes((int(role.scu), int(role.scp)))
        yield _item(ROLE_SELECTION_ITEM, body)
    if info.implementation_version_name is not None:
        name = info.implementation_version_name
        if not 1 <= len(name) <= 16 or not name.isascii():
            raise DULValueError(
                f"implementation version name {name!r} is not 1 to 16 ASCII characters"
            )
        yield _item(IMPLEMENTATION_VERSION_ITEM, name.encode("ascii"))
    for extended in info.extended_negotiation:
        uid = _uid(extended.sop_class_uid, "extended negotiation SOP class UID")
        yield _item(
            EXTENDED_NEGOTIATION_ITEM, _U16.pack(len(uid)) + uid + extended.info
        )
    for common in info.common_extended_negotiation:
        yield _item(COMMON_EXTENDED_NEGOTIATION_ITEM, _encode_common(common))
    if info.user_identity is not None:
        identity = info.user_identity
        _check_range(identity.kind, 0xFF, "user identity type")
        body = bytes((identity.kind, int(identity.positive_response_requested)))
        body += _prefixed(identity.primary, "user identity primary field")
        body += _prefixed(identity.secondary, "user identity secondary field")
        yield _item(USER_IDENTITY_RQ_ITEM, body)
    if info.identity_response is not None:
        response = info.identity_response.server_response
        yield _item(USER_IDENTITY_AC_ITEM, _prefixed(response, "server response"))
    for raw in info.unknown:
        yield _item(_check_range(raw.item_type, 0xFF, "sub-item type"), raw.data)


def _encode_common(common: CommonExtendedNegotiation) -> bytes:
    what = "common extended negotiation"
    related = b"".join(
        _prefixed(_uid(uid, f"{what} related general SOP class"), what)
        for uid in common.related_general_sop_classes
    )
    return (
        _prefixed(_uid(common.sop_class_uid, f"{what} SOP class UID"), what)
        + _prefixed(_uid(common.service_class_uid, f"{what} service class UID"), what)
        + _prefixed(related, what)
    )


# -- decoding ------------------------------------------------------------------


def _checked_pdu(
    raw: bytes | bytearray | memoryview, pdu_type: int, minimum: int
) -> bytes:
    """raw as bytes, once its header says pdu_type and its length is right."""
    data = bytes(raw)
    name = _PDU_NAMES[pdu_type]
    if len(data) < _PDU_HEADER.size:
        raise DULProtocolError(f"{name} PDU cut inside its header ({len(data)} bytes)")
    kind, length = _PDU_HEADER.unpack_from(data)
    if kind != pdu_type:
        raise DULProtocolError(
            f"expected an {name} PDU at byte 0, got type 0x{kind:02X}"
        )
    if length != len(data) - _PDU_HEADER.size:
        raise DULProtocolError(
            f"{name} PDU length field at byte 2 says {length} bytes, "
            f"{len(data) - _PDU_HEADER.size} follow"
        )
    if length < minimum:
        raise DULProtocolError(
            f"{name} PDU of {length} bytes is shorter than its {minimum} fixed bytes"
        )
    return data


_PDU_NAMES = {
    A_ASSOCIATE_RQ: "A-ASSOCIATE-RQ",
    A_ASSOCIATE_AC: "A-ASSOCIATE-AC",
    A_ASSOCIATE_RJ: "A-ASSOCIATE-RJ",
}


def _decode_fixed(
    raw: bytes | bytearray | memoryview, pdu_type: int
) -> tuple[bytes, int, str, str]:
    data = _checked_pdu(raw, pdu_type, _FIXED.size)
    version, called, calling = _FIXED.unpack_from(data, _PDU_HEADER.size)
    return data, version, _ae_text(called), _ae_text(calling)


def _ae_text(field_bytes: bytes) -> str:
    return field_bytes.decode("ascii", "replace").strip(" \0")


class _Cursor:
    """Reads the fields of one item body data[start:end], bounds checked."""

    def __init__(self, data: bytes, start: int, end: int, what: str) -> None:
        self.data = data
        self.pos = start
        self.end = end
        self.what = what

    def take(self, size: int, field_name: str) -> bytes:
        if self.end - self.pos < size:
            raise DULProtocolError(
                f"{self.what} item: its {field_name} at byte {self.pos} needs "
                f"{size} bytes, {self.end - self.pos} are left"
            )
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return value

    def u8(self, field_name: str) -> int:
        return self.take(1, field_name)[0]

    def u16(self, field_name: str) -> int:
        return int(_U16.unpack(self.take(2, field_name))[0])

    def prefixed(self, field_name: str) -> bytes:
        return self.take(self.u16(f"{field_name} length"), field_name)

    def uid(self, size: int, field_name: str) -> str:
        start = self.pos
        return _uid_text(self.take(size, field_name), self.what, field_name, start)

    def rest(self) -> bytes:
        value = self.data[self.pos : self.end]
        self.pos = self.end
        return value

    def done(self) -> None:
        if self.pos != self.end:
            raise DULProtocolError(
                f"{self.what} item: {self.end - self.pos} unexpected bytes at byte "
                f"{self.pos}"
            )


def _uid_text(value: bytes, what: str, field_name: str, offset: int) -> str:
    try:
        return value.rstrip(b"\0 ").decode("ascii")
    except UnicodeDecodeError:
        raise DULProtocolError(
            f"{what} item: the {field_name} at byte {offset} is not ASCII"
        ) from None


def _items(
    data: bytes, start: int, end: int, where: str
) -> Iterator[tuple[int, int, int]]:
    """(item type, body start, body end) of each item in data[start:end]."""
    pos = start
    while pos < end:
        if end - pos < _ITEM.size:
            raise DULProtocolError(
                f"{where}: item header cut at byte {pos} ({end - pos} bytes left)"
            )
        item_type, length = _ITEM.unpack_from(data, pos)
        if pos + _ITEM.size + length > end:
            name = _ITEM_NAMES.get(item_type, f"type 0x{item_type:02X}")
            raise DULProtocolError(
                f"{name} item at byte {pos}: its length {length} runs past the end "
                f"of the {where} (byte {end})"
            )
        yield item_type, pos + _ITEM.size, pos + _ITEM.size + length
        pos += _ITEM.size + length


def _decode_items(
    data: bytes, context_type: int
) -> tuple[str, list[PresentationContext | ContextResult], UserInformation]:
    name: str | None = None
    contexts: list[PresentationContext | ContextResult] = []
    info: UserInformation | None = None
    where = _PDU_NAMES[data[0]]
    for item_type, start, end in _items(data, _HEADERS, len(data), f"{where} PDU"):
        offset = start - _ITEM.size
        if item_type == APPLICATION_CONTEXT_ITEM:
            if name is not None:
                raise DULProtocolError(
                    f"second application context item at byte {offset}"
                )
            name = _uid_text(data[start:end], "application context", "name", start)
        elif item_type == context_type == CONTEXT_RQ_ITEM:
            contexts.append(_decode_context_rq(data, start, end))
        elif item_type == context_type == CONTEXT_AC_ITEM:
            contexts.append(_decode_context_ac(data, start, end))
        elif item_type == USER_INFORMATION_ITEM:
            if info is not None:
                raise DULProtocolError(f"second user information item at byte {offset}")
            info = _decode_user_information(data, start, end)
        else:
            raise DULProtocolError(
                f"unexpected item type 0x{item_type:02X} at byte {offset} of the "
                f"{where} PDU"
            )
    if name is None:
        raise DULProtocolError(f"{where} PDU without an application context item")
    return name, contexts, info if info is not None else UserInformation()


def _decode_context_rq(data: bytes, start: int, end: int) -> PresentationContext:
    cursor = _Cursor(data, start, end, "presentation context")
    context_id = cursor.u8("context ID")
    cursor.take(3, "reserved bytes")
    abstract: str | None = None
    syntaxes: list[str] = []
    where = f"presentation context {context_id}"
    for item_type, first, last in _items(data, cursor.pos, end, where):
        if item_type == ABSTRACT_SYNTAX_ITEM and abstract is None:
            abstract = _uid_text(data[first:last], where, "abstract syntax", first)
        elif item_type == TRANSFER_SYNTAX_ITEM:
            syntaxes.append(
                _uid_text(data[first:last], where, "transfer syntax", first)
            )
        else:
            raise DULProtocolError(
                f"{where}: unexpected sub-item type 0x{item_type:02X} at byte "
                f"{first - _ITEM.size}"
            )
    if abstract is None:
        raise DULProtocolError(
            f"{where} at byte {start - _ITEM.size}: no abstract syntax"
        )
    if not syntaxes:
        raise DULProtocolError(
            f"{where} at byte {start - _ITEM.size}: no transfer syntax"
        )
    return PresentationContext(context_id, abstract, tuple(syntaxes))


def _decode_context_ac(data: bytes, start: int, end: int) -> ContextResult:
    cursor = _Cursor(data, start, end, "presentation context result")
    context_id = cursor.u8("context ID")
    cursor.take(1, "reserved byte")
    result = cursor.u8("result/reason")
    cursor.take(1, "reserved byte")
    where = f"presentation context result {context_id}"
    syntax: str | None = None
    for item_type, first, last in _items(data, cursor.pos, end, where):
        if item_type != TRANSFER_SYNTAX_ITEM or syntax is not None:
            raise DULProtocolError(
                f"{where}: unexpected sub-item type 0x{item_type:02X} at byte "
                f"{first - _ITEM.size}"
            )
        syntax = _uid_text(data[first:last], where, "transfer syntax", first)
    if result == ACCEPTANCE and not syntax:
        raise DULProtocolError(
            f"{where} at byte {start - _ITEM.size}: accepted without a transfer syntax"
        )
    return ContextResult(context_id, result, syntax or "")


def _decode_user_information(data: bytes, start: int, end: int) -> UserInformation:
    single: dict[str, object] = {}
    lists: dict[str, list[object]] = {
        "roles": [],
        "extended_negotiation": [],
        "common_extended_negotiation": [],
        "unknown": [],
    }
    for item_type, first, last in _items(data, start, end, "user information item"):
        name = _ITEM_NAMES.get(
            item_type, f"user information sub-item 0x{item_type:02X}"
        )
        cursor = _Cursor(data, first, last, f"{name} (at byte {first - _ITEM.size})")
        key, value = _decode_sub_item(item_type, cursor)
        cursor.done()
        if key in lists:
            lists[key].append(value)
        elif key in single:
            raise DULProtocolError(
                f"second {name} sub-item at byte {first - _ITEM.size}"
            )
        else:
            single[key] = value
    return UserInformation(**single, **{k: tuple(v) for k, v in lists.items()})  # type: ignore[arg-type]


def _decode_sub_item(item_type: int, cursor: _Cursor) -> tuple[str, object]:
    if item_type == MAXIMUM_LENGTH_ITEM:
        return "maximum_length", int(_U32.unpack(cursor.take(4, "maximum length"))[0])
    if item_type == IMPLEMENTATION_CLASS_UID_ITEM:
        uid = cursor.uid(cursor.end - cursor.pos, "UID")
        return "implementation_class_uid", uid
    if item_type == ASYNC_WINDOW_ITEM:
        window = AsyncOperationsWindow(
            cursor.u16("operations invoked"), cursor.u16("operations performed")
        )
        return "async_window", window
    if item_type == ROLE_SELECTION_ITEM:
        uid = cursor.uid(cursor.u16("SOP class UID length"), "SOP class UID")
        role = RoleSelection(
            uid, bool(cursor.u8("SCU role")), bool(cursor.u8("SCP role"))
        )
        return "roles", role
    if item_type == IMPLEMENTATION_VERSION_ITEM:
        name = cursor.rest().decode("ascii", "replace").rstrip(" \0")
        return "implementation_version_name", name
    if item_type == EXTENDED_NEGOTIATION_ITEM:
        uid = cursor.uid(cursor.u16("SOP class UID length"), "SOP class UID")
        return "extended_negotiation", ExtendedNegotiation(uid, cursor.rest())
    if item_type == COMMON_EXTENDED_NEGOTIATION_ITEM:
        return "common_extended_negotiation", _decode_common(cursor)
    if item_type == USER_IDENTITY_RQ_ITEM:
        kind = cursor.u8("user identity type")
        positive = bool(cursor.u8("positive response requested"))
        primary = cursor.prefixed("primary field")
        secondary = cursor.prefixed("secondary field")
        return "user_identity", UserIdentity(kind, primary, secondary, positive)
    if item_type == USER_IDENTITY_AC_ITEM:
        return "identity_response", UserIdentityResponse(
            cursor.prefixed("server response")
        )
    return "unknown", RawSubItem(item_type, cursor.rest())


def _decode_common(cursor: _Cursor) -> CommonExtendedNegotiation:
    sop_class = cursor.uid(cursor.u16("SOP class UID length"), "SOP class UID")
    service = cursor.uid(cursor.u16("service class UID length"), "service class UID")
    size = cursor.u16("related general SOP class identification length")
    related = _Cursor(cursor.data, cursor.pos, cursor.pos + size, cursor.what)
    cursor.take(size, "related general SOP class identification")
    uids: list[str] = []
    while related.pos < related.end:
        uids.append(related.uid(related.u16("related UID length"), "related UID"))
    return CommonExtendedNegotiation(sop_class, service, tuple(uids))


def presentation_contexts(
    proposals: Iterable[tuple[str, Iterable[str]]],
) -> tuple[PresentationContext, ...]:
    """Contexts numbered 1, 3, 5 ... for (abstract syntax, transfer syntaxes)
    pairs, in order; at most 128 (PS3.8 9.3.2.2)."""
    contexts = tuple(
        PresentationContext(2 * index + 1, abstract, tuple(syntaxes))
        for index, (abstract, syntaxes) in enumerate(proposals)
    )
    if len(contexts) > 128:
        raise DULValueError(
            f"{len(contexts)} presentation contexts proposed; at most 128 fit"
        )
    return contexts
