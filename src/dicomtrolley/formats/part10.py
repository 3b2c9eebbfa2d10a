"""The DICOM file header (PS3.10 7.1) for a data set received over the network.

A C-STORE brings a bare data set in the transfer syntax of its presentation
context; on disk it becomes a Part 10 file: a 128-byte preamble, ``DICM``, and
the File Meta Information group (0002) in Explicit VR Little Endian. Encoded
here directly (a few fixed elements) so each received instance costs
microseconds, not a pydicom Dataset round trip.
"""

from __future__ import annotations

import struct
from importlib.metadata import PackageNotFoundError, version

try:
    _VERSION = version("dicomtrolley")
except PackageNotFoundError:  # running from a source tree
    _VERSION = "0"

#: Identifies files and associations made by dicomtrolley (PS3.7 D.3.3.2); from
#: pydicom's generate_uid(entropy_srcs=["dicomtrolley", "implementation class"]).
IMPLEMENTATION_CLASS_UID = (
    "1.2.826.0.1.3680043.8.498.74440318943509136089753740334980940948"
)
#: At most 16 characters (SH).
IMPLEMENTATION_VERSION_NAME = f"DTROLLEY_{_VERSION}"[:16]

PREAMBLE = bytes(128) + b"DICM"
_SHORT = struct.Struct("<HH2sH")  # explicit VR, 2-byte length
_LONG = struct.Struct("<HH2s2xL")  # OB/OW/UN...: 4-byte length


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return _LONG.pack(0x0002, element, vr, len(value)) + value
    return _SHORT.pack(0x0002, element, vr, len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    encoded = value.encode("ascii")
    return encoded + pad if len(encoded) % 2 else encoded


def file_header(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_aet: str = "",
) -> bytes:
    """Preamble, ``DICM`` and the file meta group for the given data set."""
    body = b"".join(
        (
            _element(0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, b"UI", _text(sop_class_uid, b"\0")),
            _element(0x0003, b"UI", _text(sop_instance_uid, b"\0")),
            _element(0x0010, b"UI", _text(transfer_syntax_uid, b"\0")),
            _element(0x0012, b"UI", _text(IMPLEMENTATION_CLASS_UID, b"\0")),
            _element(0x0013, b"SH", _text(IMPLEMENTATION_VERSION_NAME, b" ")),
            _element(0x0016, b"AE", _text(source_aet.strip(), b" "))
            if source_aet.strip()
            else b"",
        )
    )
    length = _element(0x0000, b"UL", struct.pack("<L", len(body)))
    return PREAMBLE + length + body
