"""Every error dicomtrolley raises: one root, transient and permanent branches.

Catch :class:`DICOMTrolleyError` to handle anything the library can raise. Catch
:class:`TransientError` for what may succeed when tried again (network trouble,
timeouts, overloaded servers) and :class:`PermanentError` for what will not.
Every error carries the context a user needs to act on it: the URL (never with
credentials), the HTTP status and the DICOM UIDs involved, where known::

    DICOMTrolleyError
    ├── TransientError                      may succeed on a later try
    │   ├── DICOMTrolleyConnectionError     refused, reset, DNS, TLS handshake
    │   │   └── DICOMTrolleyTimeoutError    connect or read timeout
    │   ├── ServerHTTPError                 HTTP 5xx, 429  (also an HTTPStatusError)
    │   └── IncompleteResponseError         answer cut (status, headers or body) or unframed
    ├── PermanentError
    │   ├── ClientHTTPError                 HTTP 4xx  (also an HTTPStatusError)
    │   ├── DICOMTrolleyAuthError           login refused, 401/403
    │   ├── ResponseFormatError             body is not what was asked for (HTML, bad JSON)
    │   │   └── MultipartContentError       malformed multipart (missing boundary ...)
    │   ├── DICOMParseError                 downloaded bytes are not a DICOM file
    │   ├── UnSupportedParameterError       a query a searcher cannot express
    │   ├── NoReferencesFoundError          an object holds no deeper references
    │   ├── NoQueryResultsError             a search found nothing where one was needed
    │   ├── NonSeriesParameterError         downloader needs series references (core)
    │   ├── NonInstanceParameterError       downloader needs instance references (core)
    │   ├── StorageError                    cannot write a file where it should go
    │   │   └── UnsafePathError             a server value would escape the output folder
    │   ├── InvalidUIDError                 a server UID that breaks the DICOM UID grammar
    │   ├── DownloadIncompleteError         instances asked for but not delivered (UIDs)
    │   └── Rad69ServerError                RAD-69 server reported errors
    │       └── XDSMissingDocumentError
    └── HTTPStatusError                     any HTTP error status: catch it for both
                                            ServerHTTPError and ClientHTTPError

No class is both transient and permanent. A multipart body cut before its
closing delimiter is an :class:`IncompleteResponseError` (a try again may get
all of it), not a :class:`MultipartContentError`; catch both, or
:class:`DICOMTrolleyError`, to handle every multipart failure.

Defined elsewhere, all PermanentErrors: ``DICOMObjectNotFound`` (parsing),
``NodeNotFound`` (caching), ``NoQueryResults`` (qido_rs, a NoQueryResultsError),
``ConfigError`` and its ``MissingSecretError`` (credentials, re-exported by
config: a profile or config file that is wrong, a secret not set).

``NonSeriesParameterError`` and ``NonInstanceParameterError`` are defined here and
re-exported from :mod:`dicomtrolley.core`, where dicomtrolley 4.1.0 had them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

REDACTED = "***"
"""What :func:`redact_url` shows instead of a secret parameter value."""

# Parameter names (lower case, letters and digits only) whose values are secret.
_SECRET_NAMES = frozenset(
    {
        "auth",
        "authorization",
        "key",
        "pass",
        "passphrase",
        "passwd",
        "pwd",
        "session",
        "sid",
        "sig",
    }
)
_SECRET_ENDINGS = (
    "accesskey",
    "apikey",
    "password",
    "privatekey",
    "secret",
    "secretkey",
    "sessid",
    "sessionid",
    "signature",
    "token",
)


def redact_url(url: str | None) -> str | None:
    """The URL with its secrets hidden, fit for errors and logs.

    User information (``user:password@``) and the fragment are removed. The
    value of every query or path parameter (``;jsessionid=...``) whose name
    says it is a secret (``password``, ``token``, ``access_token``, ``api_key``,
    ``secret``, ``session`` ...) becomes :data:`REDACTED`. Names match in any
    case, spelling (``api_key``, ``Api-Key``, ``apikey``) and percent encoding;
    all names, the other values and their order stay as they were.
    """
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    path = "/".join(_redact_segment(segment) for segment in parts.path.split("/"))
    query = "".join(_redact_parameter(p) for p in re.split(r"([&;])", parts.query))
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def _redact_segment(segment: str) -> str:
    """A path segment with its secret parameters (``;name=value``) hidden."""
    name, *parameters = segment.split(";")
    return ";".join([name, *(_redact_parameter(p) for p in parameters)])


def _redact_parameter(parameter: str) -> str:
    """``name=value``, with value hidden if name is a secret's and value is set."""
    name, equals, value = parameter.partition("=")
    if value and _is_secret_name(name):
        return f"{name}{equals}{REDACTED}"
    return parameter


def _is_secret_name(name: str) -> bool:
    plain = re.sub(r"[^a-z0-9]", "", unquote_plus(name).lower())
    return plain in _SECRET_NAMES or plain.endswith(_SECRET_ENDINGS)


class DICOMTrolleyError(Exception):
    """Root of every error raised by dicomtrolley.

    Parameters
    ----------
    message:
        What went wrong, for a person.
    url:
        The URL involved, if any. Credentials are removed before it is stored.
    status_code:
        The HTTP status involved, if any.
    uids:
        The DICOM UIDs involved (study, series or SOP instance UIDs).
    """

    def __init__(
        self,
        message: str = "",
        *,
        url: str | None = None,
        status_code: int | None = None,
        uids: Iterable[str] = (),
    ) -> None:
        self.message = message
        self.url = redact_url(url)
        self.status_code = status_code
        self.uids: tuple[str, ...] = tuple(uids)
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message] if self.message else [type(self).__name__]
        if self.status_code is not None and f"{self.status_code}" not in self.message:
            parts.append(f"(HTTP {self.status_code})")
        if self.url and self.url not in self.message:
            parts.append(f"[{self.url}]")
        return " ".join(parts)


# Kept for scripts written against dicomtrolley < 3.
DICOMTrolleyException = DICOMTrolleyError


class TransientError(DICOMTrolleyError):
    """An error that may go away when the same thing is tried again later."""


class PermanentError(DICOMTrolleyError):
    """An error that will happen again when the same thing is tried again."""


class DICOMTrolleyConnectionError(TransientError):
    """Could not connect, or the connection broke (refused, reset, DNS, TLS)."""


class DICOMTrolleyTimeoutError(DICOMTrolleyConnectionError):
    """The server did not answer within the configured connect or read timeout."""


class HTTPStatusError(DICOMTrolleyError):
    """The server answered with an HTTP error status."""


class ClientHTTPError(HTTPStatusError, PermanentError):
    """HTTP 4xx: the request was refused. Retrying the same request will not help."""


class ServerHTTPError(HTTPStatusError, TransientError):
    """HTTP 5xx or 429: the server failed or is overloaded. May work later."""


class DICOMTrolleyAuthError(PermanentError):
    """Login failed, or the server refused the credentials (401/403)."""


class ResponseFormatError(PermanentError):
    """The server answered, but not with what was asked for (HTML, malformed JSON)."""


class MultipartContentError(ResponseFormatError):
    """A multipart/related body that cannot be parsed (no boundary, bad part)."""


class IncompleteResponseError(TransientError):
    """The answer ended before it was complete (truncated body, connection cut).

    Transient only: the same request may bring the whole answer next time.
    """


class DICOMParseError(PermanentError):
    """Downloaded bytes that are not a readable DICOM file."""


class UnSupportedParameterError(PermanentError):
    """A query parameter that the chosen searcher cannot express.

    Raised instead of silently ignoring the parameter.
    """


class NoReferencesFoundError(PermanentError):
    """A DICOM object holds no references at the requested (deeper) level."""


class NoQueryResultsError(PermanentError):
    """A search found nothing where at least one result was needed."""


class NonSeriesParameterError(PermanentError):
    """A downloader needs series (or instance) references for these objects.

    The Trolley catches this, asks its searcher for the series of each study and
    tries again.
    """


class NonInstanceParameterError(PermanentError):
    """A downloader needs instance references for these objects.

    Downloaders such as WADO-URI fetch one instance per request. The Trolley catches
    this, asks its searcher for the instances and tries again.
    """


class StorageError(PermanentError):
    """A file could not be written where it should go."""


class UnsafePathError(StorageError):
    """A value used in a path would place a file outside the output folder."""


class InvalidUIDError(PermanentError):
    """A UID from a server that does not follow the DICOM UID grammar (PS3.5 9.1)."""


class DownloadIncompleteError(PermanentError):
    """Some instances that were asked for did not arrive. ``uids`` lists them.

    ``report`` is the :class:`~dicomtrolley.download.DownloadReport` of the whole
    download (what was saved and skipped), when the error comes from one.
    """

    report: Any = None


class Rad69ServerError(PermanentError):
    """A RAD-69 server reported one or more errors."""


class XDSMissingDocumentError(Rad69ServerError):
    """A RAD-69 server does not have one or more requested documents (instances)."""
