"""What a distributed batch is made of: tasks, results, and how workers connect.

Everything here is plain data that pickles: the client builds a
:class:`BatchPlan` (one :class:`StudyTask` per study, or per series of a very
large study), Dask ships it to the workers, and each task answers with a
:class:`TaskResult`. Nothing here imports Dask.

A :class:`Connector` is how a worker opens its searcher and downloader: it
holds settings, never an open session (sessions, sockets and locks do not
pickle, and a login belongs to the process that made it). Secrets are looked
up where the connector is opened, on the worker, from its environment (or a
netrc file, or the profile): see :class:`ProfileConnector`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dicomtrolley.catalog import utc_now
from dicomtrolley.logs import get_module_logger

if TYPE_CHECKING:
    import requests

    from dicomtrolley.config_model import Profile
    from dicomtrolley.core import DICOMObject, Downloader, Searcher
    from dicomtrolley.storage import DICOMDiskStorage

logger = get_module_logger("distributed")

__all__ = [
    "DEFAULT_SPLIT_ABOVE",
    "BatchPlan",
    "Connector",
    "ProfileConnector",
    "StudyTask",
    "TaskResult",
]

#: A study with more instances than this becomes one task per series.
DEFAULT_SPLIT_ABOVE = 2000


@runtime_checkable
class Connector(Protocol):
    """How a worker reaches one server. Must pickle; must hold no secret it
    can look up on the worker instead.

    ``server``: a name for the server and protocols (the cluster-wide
    semaphore and rate limit are per server). ``limit``: transfers the server
    may see at once from the whole cluster.
    """

    @property
    def server(self) -> str: ...

    @property
    def limit(self) -> int: ...

    def open(self, pool_size: int) -> tuple[Searcher, Downloader, requests.Session]:
        """A searcher and downloader (one transfer at a time) and their session."""
        ...


@dataclass(frozen=True)
class ProfileConnector:
    """A worker connects with a profile (:mod:`dicomtrolley.config`).

    The profile travels with the tasks; its secrets do not, unless written in
    the config file itself: ``password_env``, ``token_env`` and
    ``client_secret_env`` are read from each worker's environment (or netrc
    where the profile says so). A worker without them fails its tasks with a
    :class:`~dicomtrolley.credentials.MissingSecretError` naming the variable.

    ``protocols``: the download protocols in order of preference (default:
    the profile's). ``limit``: at most this many transfers at once from the
    whole cluster (default: the profile's ``workers``). The profile's
    ``[deid]`` table (which may hold a key) is left out when the connector
    travels: de-identification goes to the workers on its own, keyless (see
    :func:`~dicomtrolley.distributed.run_batch`).
    """

    profile: Profile
    protocols: tuple[str, ...] = ()
    limit_override: int | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            ProfileConnector,
            (without_deid(self.profile), self.protocols, self.limit_override),
        )

    @property
    def chosen(self) -> tuple[str, ...]:
        return self.protocols or tuple(self.profile.download)

    @property
    def server(self) -> str:
        name = self.profile.name or self.profile.where
        return f"{name}:{'+'.join(self.chosen)}"

    @property
    def limit(self) -> int:
        return self.limit_override or self.profile.workers

    def open(self, pool_size: int) -> tuple[Searcher, Downloader, requests.Session]:
        from dicomtrolley.credentials import Secrets

        secrets = Secrets(is_terminal=lambda: False)  # a worker never prompts
        session = self.profile.session(pool_size, secrets=secrets)
        searcher = self.profile.searcher(session)
        downloaders = [
            (protocol, self.profile.downloader(protocol, session, workers=1))
            for protocol in self.chosen
        ]
        if len(downloaders) == 1:
            return searcher, downloaders[0][1], session
        from dicomtrolley.fallback import FallbackDownloader

        return searcher, FallbackDownloader(downloaders, searcher=searcher), session


def without_deid(profile: Profile) -> Profile:
    """profile without its ``[deid]`` table (and any key written there)."""
    if profile.deid is None:
        return profile
    return profile.model_copy(update={"deid": None})


@dataclass
class StudyTask:
    """One unit of work: a study (or one series of it) found by a search.

    ``target`` is the Study (or Series) object as the search returned it, so
    that the worker knows what the single-machine run would know (the
    instance count that lets a re-run skip a complete study without asking).
    ``row`` and ``query`` go to the manifest as in ``dicomtrolley batch``.
    """

    target: DICOMObject
    row: Any = None
    query: str | None = None
    label: str = ""

    @property
    def study_uid(self) -> str:
        return self.target.root().uid

    @property
    def key(self) -> str:
        """Unique in a plan: the study UID, or study/series for one series."""
        if self.target.uid == self.study_uid:
            return self.study_uid
        return f"{self.study_uid}/{self.target.uid}"

    @property
    def instances(self) -> int | None:
        """Instances expected, when the search said."""
        name = (
            "NumberOfStudyRelatedInstances"
            if self.target.uid == self.study_uid
            else "NumberOfSeriesRelatedInstances"
        )
        from dicomtrolley.core import instance_count  # pydicom: on the worker

        return instance_count(self.target.data, name)


@dataclass
class BatchPlan:
    """Every task of a distributed batch, and how the workers do them.

    ``output``: the folder every worker writes to, as the workers see it (a
    shared file system). ``storage``: where files go below it (a
    :class:`~dicomtrolley.storage.TemplateStorage` ...; it pickles).
    ``rate``: at most this many HTTP requests per second to the server from
    the whole cluster (None: no limit). ``run`` and ``run_started`` mark every
    manifest line of the run, whichever worker writes it.
    """

    connector: Connector
    output: Path
    storage: DICOMDiskStorage
    tasks: list[StudyTask] = field(default_factory=list)
    rate: float | None = None
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    run_started: str = field(default_factory=utc_now)
    _keys: set[str] = field(default_factory=set, init=False, repr=False)

    @classmethod
    def from_studies(
        cls,
        studies: Sequence[DICOMObject],
        connector: Connector,
        output: str | Path,
        storage: DICOMDiskStorage | None = None,
        *,
        rate: float | None = None,
        searcher: Searcher | None = None,
        split_above: int = DEFAULT_SPLIT_ABOVE,
    ) -> BatchPlan:
        """A plan of one task per study (or series) found by a search.

        ``storage``: default the study/series/instance layout of
        :class:`~dicomtrolley.storage.StorageDir` in output. A study found
        twice is downloaded once. With a searcher, a study of more than
        split_above instances is one task per series (see :meth:`add_study`).
        """
        from dicomtrolley.storage import StorageDir

        folder = Path(output)
        plan = cls(
            connector,
            folder,
            storage if storage is not None else StorageDir(folder),
            rate=rate,
        )
        for study in studies:
            plan.add_study(study, searcher=searcher, split_above=split_above)
        return plan

    def add_study(
        self,
        study: DICOMObject,
        *,
        row: Any = None,
        query: str | None = None,
        searcher: Searcher | None = None,
        split_above: int = DEFAULT_SPLIT_ABOVE,
    ) -> int:
        """Add the task(s) of study; returns how many were added.

        A study whose search result counts more than split_above instances is
        split: the searcher is asked for its series (one request, here on the
        client) and each series is a task, so that several workers share it.
        Without a searcher, or when that search fails, the study stays one task.
        """
        whole = StudyTask(study, row, query, label=study.uid)
        expected = whole.instances
        if searcher is None or expected is None or expected <= split_above:
            return int(self.add(whole))
        from dicomtrolley.core import QueryLevels
        from dicomtrolley.exceptions import DICOMTrolleyError

        try:
            found = searcher.find_study_by_id(study.uid, query_level=QueryLevels.SERIES)
        except DICOMTrolleyError as error:
            logger.warning("study %s stays one task: %s", study.uid, error)
            return int(self.add(whole))
        series = found.all_series()
        if len(series) < 2:
            return int(self.add(whole))
        return sum(
            self.add(StudyTask(one, row, query, label=f"{study.uid} {one.uid}"))
            for one in series
        )

    def add(self, task: StudyTask) -> bool:
        """Add task unless one of the same key is there; True when added."""
        if not self._keys and self.tasks:
            self._keys = {known.key for known in self.tasks}
        if task.key in self._keys:
            return False
        self._keys.add(task.key)
        self.tasks.append(task)
        return True

    @property
    def instances(self) -> int | None:
        """Instances of every task, when each search said."""
        counts = [task.instances for task in self.tasks]
        if None in counts:
            return None
        return sum(n for n in counts if n is not None)


@dataclass
class TaskResult:
    """What one task did, sent back to the client.

    ``failures``: one line per instance, series or study that failed (UIDs
    named). ``error``: why the whole task failed (e.g. the server refused the
    login), with ``fatal`` True when every other task would fail the same way
    (a refused login, a secret missing on the worker): the client stops.
    """

    key: str
    study_uid: str
    saved: int = 0
    skipped: int = 0
    bytes_saved: int = 0
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    fatal: bool = False
    worker: str = ""
    waited: float = 0.0  # seconds waiting for the server's semaphore
    elapsed: float = 0.0  # seconds of the task, waiting included
    row: Any = None

    @property
    def ok(self) -> bool:
        return not self.failures and self.error is None
