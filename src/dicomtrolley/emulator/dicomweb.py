"""DICOMweb under ``/dicom-web``: QIDO-RS search, WADO-RS retrieve and metadata.

QIDO-RS (PS3.18 10.6): ``/studies``, ``/studies/{S}/series``,
``/studies/{S}/series/{Se}/instances`` and the relational ``/series``,
``/instances``, ``/studies/{S}/instances``. Matching keys by keyword or tag with
the rules of :mod:`~dicomtrolley.emulator.matching` (``StudyDate=from-to``,
wildcards, ``CT,MR`` lists); ``includefield`` (repeated or comma-separated,
``all``), ``limit``, ``offset`` and ``fuzzymatching`` (accepted; person names
always match case-insensitively). Results come in a stable order, so offset
pages really page. Unknown attributes: 400; known attributes the emulator does
not index: ignored, with a ``Warning: 299`` header as PS3.18 8.3.4.1 asks. Each
result holds the level's default attributes (table 10.6.3-3), the included
ones, the UIDs of its parents (and, for relational queries, the parents' default
attributes) and ``RetrieveURL``. No match: 204. ``max_results`` caps every
answer (with the PS3.18 warning that more results can be requested).

WADO-RS (PS3.18 10.4): ``/studies/{S}[/series/{Se}[/instances/{I}]]`` answers
``multipart/related; type="application/dicom"; boundary=...``, one part per
instance (``Content-Type: application/dicom; transfer-syntax=<stored>`` and
``Content-Length``), each the stored file streamed from disk, with an exact
``Content-Length`` for the whole body. The emulator converts nothing: an Accept
without transfer syntax or with ``transfer-syntax=*`` gets the stored files; one
that asks for a transfer syntax other than the stored one gets 406. An instance
can also be asked for as a single ``application/dicom`` body. ``.../metadata``
answers the DICOM JSON of the headers, without bulk data (binary values over
1 KiB and pixel data are left out).

JSON answers go out as ``application/dicom+json`` (or ``application/json``, if
that is what the client accepts); other Accept values get 406. Unknown UIDs: 404.

``refused_studies``: Study Instance UIDs whose WADO-RS retrieve (study, series or
instance) is answered 404, as a PACS does that holds a study but will not serve
it over WADO-RS; QIDO-RS still finds them, and other protocols still serve them.
For testing a client's fallback to another protocol.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread

from dicomtrolley.emulator.attributes import (
    QIDO_DEFAULTS,
    RETRIEVE_URL,
    SERIES_UID,
    SOP_UID,
    STUDY_UID,
    JsonDataset,
    Level,
    level_of,
    resolve_attribute,
)
from dicomtrolley.emulator.index import InstanceRecord
from dicomtrolley.emulator.matching import (
    Condition,
    MatchingError,
    SeriesMatch,
    StudyMatch,
    make_condition,
    search,
)
from dicomtrolley.emulator.media import parse_accept
from dicomtrolley.emulator.server import (
    FilePart,
    Handler,
    HTTPError,
    Request,
    Response,
    Route,
)
from dicomtrolley.emulator.service import Service

DICOMWEB_ROOT = "/dicom-web"
DICOM_JSON = "application/dicom+json"
_ALL = "all"


@dataclass(frozen=True)
class QidoQuery:
    """A parsed QIDO-RS query string."""

    conditions: tuple[Condition, ...]
    include: frozenset[str]  # tags, or {"all"}
    limit: int
    offset: int
    warnings: tuple[str, ...]


def parse_qido(parameters: Sequence[tuple[str, str]]) -> QidoQuery:
    """A QidoQuery from the decoded query string; HTTPError 400 when malformed."""
    conditions: list[Condition] = []
    include: set[str] = set()
    numbers = {"limit": 0, "offset": 0}
    warnings: list[str] = []
    for name, value in parameters:
        lower = name.lower()
        if lower == "includefield":
            for item in (v.strip() for v in value.split(",") if v.strip()):
                tag = _ALL if item.lower() == _ALL else resolve_attribute(item)
                if tag is None:
                    raise HTTPError(400, f"includefield: unknown attribute '{item}'")
                include.add(tag)
        elif lower in numbers:
            if not value.strip().isdigit():
                raise HTTPError(400, f"{name} must be a whole number, not '{value}'")
            numbers[lower] = int(value)
        elif lower == "fuzzymatching":
            if value.strip().lower() not in ("true", "false"):
                raise HTTPError(400, "fuzzymatching must be true or false")
        else:
            tag = resolve_attribute(name)
            if tag is None:
                raise HTTPError(400, f"Unknown query parameter '{name}'")
            if level_of(tag) is None:
                warnings.append(f"The {name} matching key is not supported")
                continue
            try:
                condition = make_condition(tag, value)
            except MatchingError as error:
                raise HTTPError(400, f"Invalid value for {name}: {error}") from None
            if condition is not None:
                conditions.append(condition)
    return QidoQuery(
        tuple(conditions),
        frozenset(include),
        numbers["limit"],
        numbers["offset"],
        tuple(warnings),
    )


def _row(
    level: Level,
    study: StudyMatch,
    series: SeriesMatch | None,
    instance: InstanceRecord | None,
    query: QidoQuery,
    relational: bool,
    base: str,
) -> JsonDataset:
    """One QIDO-RS result as DICOM JSON."""
    layers: list[JsonDataset] = [study.record.attrs]
    url = f"{base}{DICOMWEB_ROOT}/studies/{study.record.uid}"
    if series is not None:
        layers.insert(0, series.record.attrs)
        url += f"/series/{series.record.uid}"
    if instance is not None:
        layers.insert(0, instance.attrs)
        url += f"/instances/{instance.uid}"
    levels = list(Level)[: level.depth + 1] if relational else [level]
    wanted = set(query.include).union(*(QIDO_DEFAULTS[lv] for lv in levels))
    out: JsonDataset = {}
    if _ALL in wanted:
        for layer in reversed(layers):
            out.update(layer)
    for tag in wanted:
        for layer in layers:
            if tag in layer:
                out[tag] = layer[tag]
                break
    if series is not None:
        out[SERIES_UID] = {"vr": "UI", "Value": [series.record.uid]}
    if instance is not None:
        out[SOP_UID] = {"vr": "UI", "Value": [instance.uid]}
    out[STUDY_UID] = {"vr": "UI", "Value": [study.record.uid]}
    out[RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
    out.pop(_ALL, None)
    return dict(sorted(out.items()))


def json_media_type(accept: str) -> str:
    """The JSON media type to answer with, or HTTPError 406."""
    ranges = parse_accept(accept)
    if not ranges:
        return DICOM_JSON
    for media in ranges:
        if media.acceptable and media.type in (DICOM_JSON, "*/*", "application/*"):
            return DICOM_JSON
        if media.acceptable and media.type == "application/json":
            return "application/json"
    raise HTTPError(
        406, f"Cannot answer with '{accept}': this server sends {DICOM_JSON}"
    )


def dicom_media_type(accept: str, syntaxes: set[str], single_ok: bool) -> bool:
    """Whether to answer multipart (True) or a single application/dicom body.

    HTTPError 406 when nothing acceptable can be sent: the emulator sends the
    stored transfer syntaxes (``syntaxes``) only.
    """
    ranges = parse_accept(accept)
    if not ranges:
        return True
    for media in ranges:
        if not media.acceptable:
            continue
        if media.type in ("*/*", "multipart/*"):
            return True
        if media.type == "multipart/related":
            part = media.params.get("type", "application/dicom").lower()
            if part != "application/dicom":
                continue
        elif not (media.type == "application/dicom" and single_ok):
            continue
        syntax = media.params.get("transfer-syntax", "*")
        if syntax == "*" or syntaxes == {syntax}:
            return media.type != "application/dicom"
    stored = ", ".join(sorted(s or "unknown" for s in syntaxes))
    raise HTTPError(
        406,
        f"Cannot answer with '{accept}': this server sends "
        f'multipart/related; type="application/dicom" in the stored transfer '
        f"syntax ({stored}) and converts nothing",
    )


def _strip_bulk(value: Any) -> Any:
    """value without attributes that hold a BulkDataURI (recursively)."""
    if isinstance(value, dict):
        return {
            k: _strip_bulk(v)
            for k, v in value.items()
            if not (isinstance(v, dict) and "BulkDataURI" in v)
        }
    if isinstance(value, list):
        return [_strip_bulk(v) for v in value]
    return value


class DicomWebService(Service):
    """QIDO-RS, WADO-RS and WADO-RS metadata under ``/dicom-web``."""

    name = "dicomweb"

    def __init__(
        self, max_results: int = 0, refused_studies: Iterable[str] = ()
    ) -> None:
        self.max_results = max_results
        self.refused_studies = frozenset(refused_studies)

    def routes(self) -> Sequence[Route]:
        study = f"{DICOMWEB_ROOT}/studies/{{study}}"
        series = f"{study}/series/{{series}}"
        instance = f"{series}/instances/{{instance}}"

        def qido(level: Level, relational: bool) -> Handler:
            return lambda request: self.search(request, level, relational)

        table: list[tuple[str, Handler]] = [
            (f"{DICOMWEB_ROOT}/studies", qido(Level.STUDY, False)),
            (f"{study}/series", qido(Level.SERIES, False)),
            (f"{series}/instances", qido(Level.INSTANCE, False)),
            (f"{DICOMWEB_ROOT}/series", qido(Level.SERIES, True)),
            (f"{DICOMWEB_ROOT}/instances", qido(Level.INSTANCE, True)),
            (f"{study}/instances", qido(Level.INSTANCE, True)),
        ]
        for path in (study, series, instance):
            table.append((path, self.retrieve))
            table.append((f"{path}/metadata", self.metadata))
        return [
            Route("GET", path, handler, basic_challenge=True) for path, handler in table
        ]

    # -- QIDO-RS ----------------------------------------------------------------

    def search(self, request: Request, level: Level, relational: bool) -> Response:
        media_type = json_media_type(request.header("Accept"))
        query = parse_qido(request.query)
        conditions = list(query.conditions)
        for name, tag in (("study", STUDY_UID), ("series", SERIES_UID)):
            if name in request.params:
                found = make_condition(tag, request.params[name])
                conditions.extend([found] if found else [])
        matches = search(self.emulator.index, conditions, level)
        rows = [
            (study, series, instance)
            for study in matches
            for series in (study.series if level != Level.STUDY else [None])
            for instance in (
                series.instances if series and level == Level.INSTANCE else [None]
            )
        ]
        limit = query.limit
        if self.max_results and not 0 < limit <= self.max_results:
            limit = self.max_results
        end = query.offset + limit if limit else len(rows)
        page = rows[query.offset : end]
        host = request.base_url.partition("://")[2]
        warnings = list(query.warnings)
        if end < len(rows):
            warnings.append("There are additional results that can be requested")
        headers = [("Warning", f'299 {host}: "{text}"') for text in warnings]
        if not page:
            return Response(204, headers=headers)
        body = [
            _row(level, *row, query=query, relational=relational, base=request.base_url)
            for row in page
        ]
        return Response(200, _json(body), media_type, headers)

    # -- WADO-RS ----------------------------------------------------------------

    def _instances(self, request: Request) -> list[InstanceRecord]:
        params = request.params
        found = self.emulator.index.instances(
            [params["study"]],
            [params["series"]] if "series" in params else None,
            [params["instance"]] if "instance" in params else None,
        )
        if not found:
            what = "/".join(
                params[k] for k in ("study", "series", "instance") if k in params
            )
            raise HTTPError(404, f"No such study, series or instance: {what}")
        return found

    def retrieve(self, request: Request) -> Response:
        if request.params["study"] in self.refused_studies:
            raise HTTPError(
                404, f"WADO-RS is not offered for study {request.params['study']}"
            )
        instances = self._instances(request)
        multipart = dicom_media_type(
            request.header("Accept"),
            {i.transfer_syntax for i in instances},
            single_ok="instance" in request.params,
        )
        if not multipart:
            (only,) = instances
            return Response(200, [FilePart(only.path, only.size)], "application/dicom")
        boundary = secrets.token_hex(16)
        pieces: list[bytes | FilePart] = []
        for number, instance in enumerate(instances):
            syntax = instance.transfer_syntax
            content_type = "application/dicom"
            if syntax:
                content_type += f"; transfer-syntax={syntax}"
            head = (
                f"--{boundary}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {instance.size}\r\n\r\n"
            )
            if number:
                head = "\r\n" + head
            pieces += [head.encode("ascii"), FilePart(instance.path, instance.size)]
        pieces.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
        return Response(
            200,
            pieces,
            f'multipart/related; type="application/dicom"; boundary={boundary}',
        )

    def metadata(self, request: Request) -> Response:
        instances = self._instances(request)
        media_type = json_media_type(request.header("Accept"))
        datasets = []
        for instance in instances:
            try:
                dataset = dcmread(instance.path, stop_before_pixels=True)
                data = dataset.to_json_dict(
                    bulk_data_threshold=1024,
                    bulk_data_element_handler=lambda element: "bulk",
                    suppress_invalid_tags=True,
                )
            except Exception as error:  # the file changed or vanished since indexing
                self.emulator.index.invalidate()
                raise HTTPError(
                    503,
                    f"data changed, try again ({type(error).__name__})",
                    [("Retry-After", "1")],
                ) from None
            datasets.append(_strip_bulk(data))
        return Response(200, _json(datasets), media_type)


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
