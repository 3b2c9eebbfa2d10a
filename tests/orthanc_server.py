"""A real Orthanc PACS for tests: started by hand, on free ports, in a temporary folder.

Usage::

    with OrthancServer() as orthanc:
        orthanc.upload(paths)
        requests.get(f"{orthanc.dicomweb_url}/studies", timeout=10)

Facts about Debian's Orthanc 1.10.1 with the DICOMweb plugin 1.7, found by
experiment on this machine (the fixture tests in tests/orthanc check the main ones):

* Result caps. ``LimitFindResults`` (patient, study and series level) and
  ``LimitFindInstances`` (instance level) cap C-FIND *and* QIDO-RS:

  - C-FIND answers exactly N matches, then a final status Cancel (0xFE00,
    "matching terminated due to cancel request") instead of Success.
  - QIDO-RS answers N + 1 matches (Orthanc asks its index for one more than
    the cap to detect truncation, and the plugin passes them all on) with
    HTTP 200 and no Warning header: a client cannot tell it was truncated.
  - QIDO-RS honours ``limit`` and ``offset``, but ``offset`` is applied to the
    capped list: with a cap of N, ``offset`` >= N + 1 answers an empty list, so
    paging cannot get past the cap.
  - ``/tools/find`` of the REST API is capped the same way (N + 1).

* Query strings. Orthanc 1.10.1 hands QIDO-RS (and WADO-URI) parameters over
  without percent-decoding them: ``PatientName=D%2A``, ``Doe%5EJohn``,
  ``Doe%20John``, ``limit=%32`` are taken literally (no match, or HTTP 400 for
  ``limit``), while ``PatientName=D*`` and ``Doe^John`` match. requests'
  ``params=`` escapes ``*`` and ``^`` (and requests re-escapes a raw ``^`` in a
  URL), so a QIDO-RS client must build the query string itself. Raw non-ASCII
  bytes in the query get HTTP 400: a non-ASCII name can only be searched with
  wildcards (``M*ller^J*``).
* Character sets. With Orthanc's default ``DefaultEncoding`` (Latin1), QIDO-RS
  answers claim ``ISO_IR 100`` and lose what Latin-1 cannot hold: the
  ideographic and phonetic groups of ``Yamada^Tarou=山田^太郎=やまだ^たろう``
  come back as ``"^"``. This helper sets ``"DefaultEncoding": "Utf8"``; then
  QIDO-RS answers ``ISO_IR 192`` and ``{"Alphabetic": "Yamada^Tarou",
  "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}``.
* Bytes. WADO-URI (``/wado?...&contentType=application/dicom``, no
  ``transferSyntax``) and WADO-RS with ``transfer-syntax=*`` answer the stored
  file byte for byte, whatever its transfer syntax (Explicit, Implicit, RLE).
  WADO-RS without ``transfer-syntax`` (or with 1.2.840.10008.1.2.1) transcodes
  Implicit VR and RLE instances to Explicit VR Little Endian: other bytes.
  Multipart answers carry ``Content-Length`` in each part and an unquoted
  boundary in ``Content-Type``.
* HTTP compression. Orthanc's default ``HttpCompressionEnabled: true`` gzips
  answers (DICOM files and multipart included) when the client sends
  ``Accept-Encoding: gzip``, as requests does. This helper turns it off unless
  ``http_compression=True`` (big downloads would measure Orthanc's gzip).
* Orthanc and its DICOM listener bind every interface (no bind-address option);
  ``RemoteAccessAllowed: false`` only restricts the REST API. Run the tests in a
  loopback-only network namespace (scripts/loopback-only.sh) to keep the DICOM
  port private.

Ports are found by binding 127.0.0.1:0 and closing the socket before Orthanc
starts; in the rare case that another process takes the port in between, the
start is retried with new ports.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import requests

from dicomtrolley import synthetic

ORTHANC_EXECUTABLE = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"

#: (connect, read) timeout for every HTTP call this helper makes.
HTTP_TIMEOUT = (5.0, 120.0)


_RUNNING: set[OrthancServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Stop servers a crashed test session left running."""
    for server in list(_RUNNING):
        server.stop()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OrthancServer:
    """An Orthanc process with its own configuration, storage and log.

    Parameters
    ----------
    aet:
        Orthanc's DICOM AE title.
    users:
        ``{"user": "password"}``: enables HTTP basic authentication with these
        users. ``None`` (default): no authentication.
    modalities:
        Orthanc's ``DicomModalities``, for example
        ``{"TROLLEY": ["TROLLEY", "127.0.0.1", 11112]}`` (C-MOVE destinations).
    limit_find_results, limit_find_instances:
        Orthanc's ``LimitFindResults`` / ``LimitFindInstances`` (0: no limit). They
        cap C-FIND (N answers, then status Cancel) and QIDO-RS (N + 1 answers):
        see the module docstring.
    dicomweb:
        Entries merged into the ``DicomWeb`` section of the configuration.
    extra_config:
        Entries merged into the top level of the configuration (last word).
    http_compression:
        Orthanc's ``HttpCompressionEnabled`` (off by default here).
    verbose:
        Start Orthanc with ``--verbose``.
    startup_timeout:
        Seconds to wait for ``GET /system`` to answer.
    """

    def __init__(
        self,
        *,
        aet: str = "ORTHANC",
        users: Mapping[str, str] | None = None,
        modalities: Mapping[str, Sequence[Any] | Mapping[str, Any]] | None = None,
        limit_find_results: int = 0,
        limit_find_instances: int = 0,
        dicomweb: Mapping[str, Any] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        http_compression: bool = False,
        verbose: bool = False,
        startup_timeout: float = 20.0,
        executable: str = ORTHANC_EXECUTABLE,
        plugin: str = DICOMWEB_PLUGIN,
    ) -> None:
        self.aet = aet
        self.users = dict(users) if users else {}
        self.modalities = {name: value for name, value in (modalities or {}).items()}
        self.limit_find_results = limit_find_results
        self.limit_find_instances = limit_find_instances
        self.dicomweb_options = dict(dicomweb or {})
        self.extra_config = dict(extra_config or {})
        self.http_compression = http_compression
        self.verbose = verbose
        self.startup_timeout = startup_timeout
        self.executable = executable
        self.plugin = plugin

        self.http_port = 0
        self.dicom_port = 0
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self.config: dict[str, Any] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._session: requests.Session | None = None

    # -- addresses --------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    @property
    def wado_url(self) -> str:
        return f"{self.http_url}/wado"

    @property
    def auth(self) -> tuple[str, str] | None:
        """(user, password) of the first registered user, or None without auth."""
        if not self.users:
            return None
        return next(iter(self.users.items()))

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- configuration ----------------------------------------------------------

    def build_config(self, workdir: Path) -> dict[str, Any]:
        """The JSON configuration for ``workdir`` and the current ports."""
        dicomweb: dict[str, Any] = {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Ssl": False,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        }
        dicomweb.update(self.dicomweb_options)
        config: dict[str, Any] = {
            "Name": f"dicomtrolley-test-{self.http_port}",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            "TemporaryDirectory": str(workdir / "tmp"),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "HttpDescribeErrors": True,
            "HttpCompressionEnabled": self.http_compression,
            "DefaultEncoding": "Utf8",
            "HttpTimeout": 120,
            "HttpRequestTimeout": 120,
            "KeepAlive": True,
            "TcpNoDelay": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [self.plugin],
            "DicomWeb": dicomweb,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": self.modalities,
            "DicomScpTimeout": 60,
            "DicomScuTimeout": 30,
            "StableAge": 1,
            "SaveJobs": False,
            "LimitFindResults": self.limit_find_results,
            "LimitFindInstances": self.limit_find_instances,
            "OverwriteInstances": False,
            "ExecuteLuaEnabled": False,
        }
        config.update(self.extra_config)
        return config

    # -- life cycle -------------------------------------------------------------

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> OrthancServer:
        """Start Orthanc and wait until its REST API answers.

        Raises RuntimeError (with the tail of Orthanc's log) when it does not.
        """
        if self.running:
            return self
        if not Path(self.executable).exists():
            raise RuntimeError(f"Orthanc not installed: {self.executable} is missing")
        if not Path(self.plugin).exists():
            raise RuntimeError(f"DICOMweb plugin missing: {self.plugin}")
        error = ""
        for _attempt in range(attempts):
            try:
                self._start_once()
                return self
            except (RuntimeError, OSError) as exc:
                error = str(exc)
                self.stop()
                if "already in use" not in error and "bind" not in error.lower():
                    break
        raise RuntimeError(error)

    def _start_once(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="dicomtrolley-orthanc-"))
        for name in ("storage", "index", "tmp"):
            (self.workdir / name).mkdir()
        self.http_port = free_port()
        self.dicom_port = free_port()
        while self.dicom_port == self.http_port:
            self.dicom_port = free_port()
        self.config = self.build_config(self.workdir)
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config, indent=2), encoding="utf-8")
        self.log_path = self.workdir / "orthanc.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  closed in stop()
        command = [self.executable]
        if self.verbose:
            command.append("--verbose")
        command.append(str(config_path))
        environment = dict(os.environ, TCP_NODELAY="1")
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=environment,
            preexec_fn=_die_with_parent if os.name == "posix" else None,
        )
        _RUNNING.add(self)
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise RuntimeError(
                    f"Orthanc exited with code {code} while starting.\n"
                    f"--- tail of {self.log_path} ---\n{self.log_tail()}"
                )
            try:
                answer = requests.get(
                    f"{self.http_url}/system", auth=self.auth, timeout=(1.0, 2.0)
                )
            except requests.RequestException as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if answer.status_code == 200:
                    self._check_plugin()
                    return
                last_error = f"HTTP {answer.status_code}: {answer.text[:200]}"
            time.sleep(0.05)
        raise RuntimeError(
            f"Orthanc did not answer GET /system within {self.startup_timeout} s "
            f"({last_error}).\n--- tail of {self.log_path} ---\n{self.log_tail()}"
        )

    def _check_plugin(self) -> None:
        """Orthanc starts without a plugin it cannot load: refuse that."""
        if not self.config.get("DicomWeb", {}).get("Enable", False):
            return
        plugins = requests.get(
            f"{self.http_url}/plugins", auth=self.auth, timeout=(1.0, 5.0)
        )
        if plugins.status_code != 200 or "dicom-web" not in plugins.json():
            raise RuntimeError(
                f"Orthanc started without its DICOMweb plugin ({self.plugin}).\n"
                f"--- tail of {self.log_path} ---\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of Orthanc's log ('' when there is none)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        if self._log is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def request_stop(self) -> None:
        """Ask Orthanc to stop (SIGTERM) without waiting; :meth:`stop` finishes.

        Orthanc 1.10 needs about 3.5 s to shut down (its HTTP and DICOM servers
        poll for the stop flag), so stop several servers by calling this on each
        first.
        """
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def stop(self) -> None:
        """Terminate Orthanc (kill after 5 s) and remove its folder."""
        self.request_stop()
        process, self._process = self._process, None
        _RUNNING.discard(self)
        if process is not None:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self.log_path = None

    # -- HTTP -------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        """A requests session with Orthanc's credentials (if any)."""
        if self._session is None:
            self._session = requests.Session()
            self._session.auth = self.auth
        return self._session

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """``GET http_url + path`` with credentials and timeouts."""
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return self.session.get(f"{self.http_url}{path}", **kwargs)

    def get_json(self, path: str, **kwargs: Any) -> Any:
        """``GET`` a REST resource; raises for an HTTP error status."""
        answer = self.get(path, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def upload(self, paths: Iterable[Path | str]) -> list[dict[str, Any]]:
        """POST each file to ``/instances``; returns Orthanc's JSON answers.

        Raises RuntimeError when Orthanc refuses a file.
        """
        answers = []
        for path in paths:
            data = Path(path).read_bytes()
            answer = self.session.post(
                f"{self.http_url}/instances",
                data=data,
                headers={"Content-Type": "application/dicom"},
                timeout=HTTP_TIMEOUT,
            )
            if answer.status_code != 200:
                raise RuntimeError(
                    f"Orthanc refused {path}: HTTP {answer.status_code} "
                    f"{answer.text[:500]}\n--- log ---\n{self.log_tail(10)}"
                )
            answers.append(answer.json())
        return answers

    def statistics(self) -> dict[str, Any]:
        """``GET /statistics`` (CountPatients, CountStudies, CountInstances, ...)."""
        result: dict[str, Any] = self.get_json("/statistics")
        return result


@dataclass(frozen=True)
class GeneratedStudies:
    """Synthetic studies written to disk, indexed for round-trip comparisons."""

    root: Path
    studies: tuple[synthetic.StudySpec, ...]
    paths: tuple[Path, ...]
    #: SOPInstanceUID -> local file
    by_uid: Mapping[str, Path]
    #: SOPInstanceUID -> what was generated
    instances: Mapping[str, synthetic.InstanceSpec]

    def find(
        self, *, transfer_syntax: str | None = None, multi_frame: bool = False
    ) -> synthetic.InstanceSpec:
        """The first instance with this transfer syntax (and frame layout)."""
        for instance in self.instances.values():
            series = instance.series
            if (series.frames > 1) != multi_frame:
                continue
            if transfer_syntax is None or series.transfer_syntax == transfer_syntax:
                return instance
        raise LookupError(f"no instance with {transfer_syntax}, {multi_frame=}")


def generate_studies(
    root: Path, studies: Iterable[synthetic.StudySpec] | None = None
) -> GeneratedStudies:
    """Write ``studies`` (default: the demo set) below ``root`` and index them."""
    specs = tuple(synthetic.default_studies() if studies is None else studies)
    paths = tuple(synthetic.write_studies(root, specs))
    instances = list(synthetic.instance_specs(specs))
    assert len(instances) == len(paths)
    return GeneratedStudies(
        root=root,
        studies=specs,
        paths=paths,
        by_uid={
            spec.sop_instance_uid: path
            for spec, path in zip(instances, paths, strict=True)
        },
        instances={spec.sop_instance_uid: spec for spec in instances},
    )
