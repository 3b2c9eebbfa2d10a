"""A reference PACS in a box: serves a folder of DICOM files over the protocols
dicomtrolley speaks, for demos and for tests (yours and ours).

The emulator is an implementation of its own, written from the specifications
and from recordings of real servers, not from dicomtrolley's clients: client and
server check each other. Start it in-process::

    from dicomtrolley.emulator import Emulator

    with Emulator("data") as emulator:          # loopback, a free port
        print(emulator.mint_url, emulator.dicomweb_url)

or from the command line: ``dicomtrolley serve --data DIR`` (and
``dicomtrolley demo-data DIR`` to fill DIR with synthetic studies).

Layout, one module per concern:

- :mod:`~dicomtrolley.emulator.app`: :class:`Emulator`, start/stop, URLs.
- :mod:`~dicomtrolley.emulator.index`: the SQLite index of the data folder that
  every protocol answers from; re-indexes changed files while running.
  :mod:`~dicomtrolley.emulator.scan` reads the folder and the file headers.
- :mod:`~dicomtrolley.emulator.attributes`: which attributes live at which level.
- :mod:`~dicomtrolley.emulator.matching`: DICOM attribute matching and search.
- :mod:`~dicomtrolley.emulator.server`: HTTP requests, responses, routing, error
  pages and streaming of files.
- :mod:`~dicomtrolley.emulator.service`: :class:`Service`, the plug-in point.
- One module per protocol: :mod:`~dicomtrolley.emulator.login` (Vitrea login,
  sessions, basic auth), :mod:`~dicomtrolley.emulator.mint` (MINT search),
  :mod:`~dicomtrolley.emulator.wado_uri` (WADO-URI),
  :mod:`~dicomtrolley.emulator.dicomweb` (QIDO-RS, WADO-RS) with
  :mod:`~dicomtrolley.emulator.media` (Accept headers),
  :mod:`~dicomtrolley.emulator.rad69` (IHE RAD-69 SOAP/MTOM at ``/rad69``),
  :mod:`~dicomtrolley.emulator.oauth2` (an OAuth2 token endpoint, when
  ``oauth2_clients`` are given: then every endpoint needs its bearer tokens),
  :mod:`~dicomtrolley.emulator.dimse` (C-ECHO, C-FIND, C-GET, C-MOVE on a port
  of its own; not started unless asked for, see below).

DIMSE is served when asked for: ``Emulator(data, services=[*default_services(),
DimseService()])`` (then ``emulator.dimse.port``, ``emulator.dimse.ae_title``)
or ``dicomtrolley serve --dimse-port N``.

A new protocol is a
:class:`Service` subclass added to :func:`default_services` or passed as
``Emulator(data, services=[*default_services(), MyService()])``; see
:mod:`~dicomtrolley.emulator.service`.

Everything logs to the ``trolley.emulator`` logger; passwords never.
"""

from dicomtrolley.emulator.app import (
    DEFAULT_REALM,
    DEFAULT_USERS,
    Emulator,
    default_services,
)
from dicomtrolley.emulator.dicomweb import DICOMWEB_ROOT, DicomWebService
from dicomtrolley.emulator.dimse import DEFAULT_AE_TITLE, DimseService
from dicomtrolley.emulator.index import (
    DicomIndex,
    IndexStats,
    InstanceRecord,
    ScanReport,
    SeriesRecord,
    StudyRecord,
)
from dicomtrolley.emulator.login import LOGIN_PATH, LoginService, SessionStore
from dicomtrolley.emulator.mint import MINT_ROOT, MintService
from dicomtrolley.emulator.oauth2 import OAUTH2_TOKEN_PATH, OAuth2Service, TokenStore
from dicomtrolley.emulator.rad69 import RAD69_PATH, Rad69Service
from dicomtrolley.emulator.server import (
    FilePart,
    HTTPError,
    Request,
    Response,
    Route,
)
from dicomtrolley.emulator.service import Service
from dicomtrolley.emulator.wado_uri import WADO_URI_PATH, WadoURIService

__all__ = [
    "DEFAULT_AE_TITLE",
    "DEFAULT_REALM",
    "DEFAULT_USERS",
    "DICOMWEB_ROOT",
    "LOGIN_PATH",
    "MINT_ROOT",
    "OAUTH2_TOKEN_PATH",
    "RAD69_PATH",
    "WADO_URI_PATH",
    "DicomIndex",
    "DicomWebService",
    "DimseService",
    "Emulator",
    "FilePart",
    "HTTPError",
    "IndexStats",
    "InstanceRecord",
    "LoginService",
    "MintService",
    "OAuth2Service",
    "Rad69Service",
    "Request",
    "Response",
    "Route",
    "ScanReport",
    "SeriesRecord",
    "Service",
    "SessionStore",
    "StudyRecord",
    "TokenStore",
    "WadoURIService",
    "default_services",
]
