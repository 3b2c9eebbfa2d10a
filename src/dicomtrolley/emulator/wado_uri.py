"""WADO-URI (PS3.18 chapter 9): ``GET /wado?requestType=WADO&studyUID=...``.

Serves the stored file of one instance, unchanged, as ``application/dicom`` with
its exact ``Content-Length``, streamed from disk. ``requestType=WADO`` and the
three UIDs are required (400 otherwise, also for UIDs that are not digits and
dots). ``contentType`` must be ``application/dicom`` (``application%2Fdicom``
decodes to the same); other content types, and a ``transferSyntax`` other than
the stored one, answer 406: the emulator renders no images and converts no
transfer syntaxes. An instance that is not indexed, or that does not belong to
the given study and series, answers 404. Other WADO parameters (``anonymize``,
``frameNumber`` ...) are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

from dicomtrolley.emulator.attributes import is_uid
from dicomtrolley.emulator.server import FilePart, HTTPError, Request, Response, Route
from dicomtrolley.emulator.service import Service

WADO_URI_PATH = "/wado"
DICOM_MEDIA_TYPE = "application/dicom"


class WadoURIService(Service):
    """``GET /wado``: one instance as its stored PS3.10 file."""

    name = "wado-uri"

    def routes(self) -> Sequence[Route]:
        return [Route("GET", WADO_URI_PATH, self.retrieve, basic_challenge=True)]

    def retrieve(self, request: Request) -> Response:
        params: dict[str, str] = {}
        for name, value in request.query:
            params.setdefault(name, value.strip())
        if params.get("requestType", "").upper() != "WADO":
            raise HTTPError(400, "requestType=WADO is required")
        uids = []
        for name in ("studyUID", "seriesUID", "objectUID"):
            value = params.get(name, "")
            if not value:
                raise HTTPError(400, f"{name} is required")
            if not is_uid(value):
                raise HTTPError(400, f"{name} {value[:80]!r} is not a valid DICOM UID")
            uids.append(value)
        content_types = [
            item.split(";")[0].strip().lower()
            for item in params.get("contentType", "").split(",")
        ]
        if DICOM_MEDIA_TYPE not in content_types and "*/*" not in content_types:
            raise HTTPError(406, "this server sends contentType=application/dicom only")
        instance = self.emulator.index.instance(uids[2])
        if instance is None or (instance.study_uid, instance.series_uid) != (
            uids[0],
            uids[1],
        ):
            raise HTTPError(404, f"No instance {uids[2]} in series {uids[1]}")
        syntax = params.get("transferSyntax", "")
        if syntax and syntax != "*" and syntax != instance.transfer_syntax:
            raise HTTPError(
                406,
                f"instance is stored as {instance.transfer_syntax}; this server "
                f"cannot convert it to {syntax}",
            )
        return Response(200, [FilePart(instance.path, instance.size)], DICOM_MEDIA_TYPE)
