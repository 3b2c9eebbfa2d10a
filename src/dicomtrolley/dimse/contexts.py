"""Presentation contexts and roles for query/retrieve associations (PS3.8 9.3.2, PS3.7 D.3.3.4).

An association may propose at most 128 presentation contexts. A C-GET needs one
for the GET information model plus one or more per storage SOP class the PACS
may send back, each with the SCP role negotiated for that class (SCP/SCU role
selection), because the instances come back as C-STORE requests over the same
association.

The SCP accepts one transfer syntax per context. To let the PACS send each
instance as it is stored (no transcoding, no loss), every SOP class gets a
context with the uncompressed syntaxes and, as far as the budget allows, one
context per common compressed syntax. Classes without pixel data (reports,
presentation states, PDF) only get the uncompressed one. The classes come from
the search when it found them (``SOPClassUID`` of instances, ``SOPClassesInStudy``
of studies), else from :data:`COMMON_STORAGE_CLASSES`.

The storage SCP that receives C-MOVE sub-operations answers the contexts a
PACS proposes with :func:`accept_storage`: every storage SOP class (and
Verification), each in the first of :data:`ACCEPTED_SYNTAXES` the PACS offers.

Everything here is pure, without any I/O: proposals are :class:`Proposal`
values (:meth:`Link.connect <dicomtrolley.dimse.link.Link.connect>` numbers
them), roles :class:`~dicomtrolley.formats.association.RoleSelection` items,
and what a peer accepted :class:`~dicomtrolley.formats.negotiation.
AcceptedContext` values.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

from pydicom import uid as pydicom_uid
from pydicom.uid import (
    JPEG2000,
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicomtrolley.core import DICOMDownloadable, Instance, Series, Study
from dicomtrolley.dimse.errors import ServiceNotSupportedError
from dicomtrolley.dimse.settings import Peer
from dicomtrolley.formats.association import AssociateRQ, RoleSelection
from dicomtrolley.formats.negotiation import (
    AcceptedContext,
    AcceptorNegotiation,
    negotiate_as_acceptor,
)

#: PS3.8 9.3.2.2: presentation context IDs are odd numbers 1-255.
MAX_CONTEXTS = 128

#: Query/retrieve information models (PS3.4 C.6), by model and operation.
QR_MODELS: dict[tuple[str, str], UID] = {
    ("study", "find"): UID("1.2.840.10008.5.1.4.1.2.2.1"),
    ("study", "move"): UID("1.2.840.10008.5.1.4.1.2.2.2"),
    ("study", "get"): UID("1.2.840.10008.5.1.4.1.2.2.3"),
    ("patient", "find"): UID("1.2.840.10008.5.1.4.1.2.1.1"),
    ("patient", "move"): UID("1.2.840.10008.5.1.4.1.2.1.2"),
    ("patient", "get"): UID("1.2.840.10008.5.1.4.1.2.1.3"),
}
MODELS = ("study", "patient")

#: The transfer syntaxes every query/retrieve model context offers.
UNCOMPRESSED: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

#: Compressed syntaxes offered one per context, most common in archives first.
COMPRESSED: tuple[UID, ...] = (
    JPEGLosslessSV1,
    JPEG2000Lossless,
    RLELossless,
    JPEGBaseline8Bit,
    JPEG2000,
    JPEGLSLossless,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    DeflatedExplicitVRLittleEndian,
)

#: Storage SOP classes proposed for a C-GET when the search did not say which
#: the study holds: images of the common modalities first, then documents.
COMMON_STORAGE_CLASSES: tuple[UID, ...] = tuple(
    UID(uid)
    for uid in (
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image
        "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image
        "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image, for presentation
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
        "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray, presentation
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
        "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image
        "1.2.840.10008.5.1.4.1.1.128",  # PET Image
        "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image
        "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic Image
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
        "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image, for processing
        "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray, processing
        "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis Image
        "1.2.840.10008.5.1.4.1.1.1.3",  # Digital Intra-Oral X-Ray, presentation
        "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA Image
        "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image
        "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
        "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
        "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image
        "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic Image
        "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
        # no pixel data: uncompressed only
        "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
        "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
        "1.2.840.10008.5.1.4.1.1.481.8",  # RT Ion Plan
        "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
        "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection Document
        "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
        "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
        "1.2.840.10008.5.1.4.1.1.66",  # Raw Data
        "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
    )
)

#: Storage classes whose instances hold no pixel data: compression is pointless.
NO_PIXEL_DATA_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated documents
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, registrations, segmentation*
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT plan
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT ion plan
)
_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"  # *has pixel data after all


class Proposal(NamedTuple):
    """A presentation context to propose: an abstract syntax and the transfer
    syntaxes offered for it, most wanted first (the ID comes when proposed)."""

    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


def proposal(
    abstract_syntax: str, transfer_syntaxes: Iterable[str] = UNCOMPRESSED
) -> Proposal:
    """A context for abstract_syntax (default: the uncompressed syntaxes)."""
    return Proposal(str(abstract_syntax), tuple(str(ts) for ts in transfer_syntaxes))


def qr_model(model: str, operation: str) -> UID:
    """The SOP class UID of a query/retrieve model (``study``/``patient``) for
    ``find``, ``get`` or ``move``."""
    try:
        return QR_MODELS[(model, operation)]
    except KeyError:
        raise ValueError(
            f"unknown query/retrieve model {model!r}: use 'study' or 'patient'"
        ) from None


def has_pixel_data(sop_class: str) -> bool:
    """False for storage classes that never hold pixel data (SR, PR, PDF ...)."""
    if sop_class == _SEGMENTATION:
        return True
    return not sop_class.startswith(NO_PIXEL_DATA_PREFIXES)


def syntax_groups(sop_class: str) -> list[tuple[UID, ...]]:
    """The transfer syntax lists to propose for sop_class, most wanted first."""
    groups: list[tuple[UID, ...]] = [UNCOMPRESSED]
    if has_pixel_data(sop_class):
        groups.extend((syntax,) for syntax in COMPRESSED)
    return groups


def storage_contexts(
    sop_classes: Sequence[str] | None = None, budget: int = MAX_CONTEXTS - 1
) -> list[Proposal]:
    """Storage presentation contexts for sop_classes (default: the common set).

    At most ``budget`` contexts: every class gets its uncompressed context first,
    then the budget left is shared out one compressed syntax at a time, class by
    class, in order. When there are more classes than the budget, the last
    classes are left out.
    """
    if budget < 1:
        raise ValueError("no room for any storage context")
    classes = list(dict.fromkeys(UID(str(uid)) for uid in sop_classes or ()))
    if not classes:
        classes = list(COMMON_STORAGE_CLASSES)
    classes = classes[:budget]
    groups = {uid: syntax_groups(uid) for uid in classes}
    chosen: dict[UID, list[tuple[UID, ...]]] = {uid: [] for uid in classes}
    left = budget
    depth = 0
    while left > 0:
        added = False
        for uid in classes:
            if left == 0:
                break
            if depth < len(groups[uid]):
                chosen[uid].append(groups[uid][depth])
                left -= 1
                added = True
        if not added:
            break
        depth += 1
    return [proposal(uid, group) for uid in classes for group in chosen[uid]]


def scp_roles(contexts: Iterable[Proposal]) -> list[RoleSelection]:
    """One role selection item per storage class: we are its SCP (C-GET), not
    its SCU (PS3.7 D.3.3.4: the roles named are the requestor's)."""
    classes = dict.fromkeys(cx.abstract_syntax for cx in contexts)
    return [RoleSelection(uid, scu=False, scp=True) for uid in classes]


def sop_classes_of(objects: Iterable[DICOMDownloadable]) -> list[str]:
    """The storage SOP classes a search found for objects ([] when unknown).

    Only complete knowledge counts: one object whose classes are unknown makes
    the whole answer unknown, so that no class is left out.
    """
    found: dict[str, None] = {}
    for obj in objects:
        classes = _classes_of(obj)
        if not classes:
            return []
        found.update(dict.fromkeys(classes))
    return list(found)


def _classes_of(obj: DICOMDownloadable) -> list[str]:
    if isinstance(obj, Instance):
        value = obj.data.get("SOPClassUID")
        return [str(value)] if value else []
    if isinstance(obj, Series):
        if obj.instances:
            return sop_classes_of(obj.instances)
        return _multi(obj.parent.data.get("SOPClassesInStudy"))
    if isinstance(obj, Study):
        listed = _multi(obj.data.get("SOPClassesInStudy"))
        if listed:
            return listed
        return sop_classes_of(obj.series) if obj.series else []
    return []


def _multi(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part for part in value.split("\\") if part]
    if isinstance(value, Iterable):
        return [str(part) for part in value if part]
    return [str(value)]


def require_context(
    accepted: Iterable[AcceptedContext], sop_class: str, peer: Peer, operation: str
) -> None:
    """Raise ServiceNotSupportedError when the accepted contexts lack sop_class."""
    if not any(cx.abstract_syntax == sop_class for cx in accepted):
        name = getattr(sop_class, "name", sop_class)
        raise ServiceNotSupportedError(
            f"the peer does not support {name} ({sop_class})",
            peer=peer,
            operation=operation,
        )


# -- the storage SCP's side ---------------------------------------------------------

VERIFICATION = "1.2.840.10008.1.1"
#: Every standard storage SOP class UID starts with this (PS3.4 B.5).
STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."
#: What the storage SCP takes, most wanted first: uncompressed as C-GET asks,
#: then whatever the PACS holds (stored as received, never transcoded by us).
ACCEPTED_SYNTAXES: tuple[str, ...] = tuple(
    dict.fromkeys([*UNCOMPRESSED, *COMPRESSED, *AllTransferSyntaxes])
)


class _StorageSyntaxes(Mapping[str, Sequence[str]]):
    """Every storage SOP class and Verification -> ACCEPTED_SYNTAXES."""

    def __getitem__(self, abstract_syntax: str) -> Sequence[str]:
        if abstract_syntax == VERIFICATION or is_storage_class(abstract_syntax):
            return ACCEPTED_SYNTAXES
        raise KeyError(abstract_syntax)

    def __iter__(self) -> Iterator[str]:
        return iter([VERIFICATION, *sorted(_storage_classes())])

    def __len__(self) -> int:
        return 1 + len(_storage_classes())


#: A SOP class named "... Storage" that is no storage service class (PS3.10).
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@functools.cache
def _storage_classes() -> frozenset[str]:
    """The storage SOP classes pydicom names (some outside STORAGE_ROOT, such as
    RT Beams Delivery Instruction or Hanging Protocol Storage)."""
    return frozenset(
        str(value)
        for value in vars(pydicom_uid).values()
        if isinstance(value, UID)
        and value.type == "SOP Class"
        and "Storage" in value.name
        and value != _MEDIA_STORAGE_DIRECTORY
    )


def is_storage_class(sop_class: str) -> bool:
    return sop_class.startswith(STORAGE_ROOT) or sop_class in _storage_classes()


def accept_storage(request: AssociateRQ) -> AcceptorNegotiation:
    """The storage SCP's answer to each context of request.

    Storage classes and Verification are accepted in the first of
    :data:`ACCEPTED_SYNTAXES` the requestor offers; other abstract syntaxes,
    and contexts without any syntax we know, are refused. Role selection
    proposals get no answer: the requestor stays the SCU.
    """
    return negotiate_as_acceptor(request, _StorageSyntaxes())
