"""Remember search results so repeated searches do not reach the server again.

:class:`DICOMObjectCache` keeps studies, series and instances by reference for
``expiry_seconds``; :class:`QueryCache` remembers which objects answered which
query; :class:`CachedSearcher` wraps any searcher with both. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

from dicomtrolley.core import (
    DICOMObject,
    DICOMObjectLevels,
    DICOMObjectReference,
    InstanceReference,
    Query,
    QueryLevels,
    Searcher,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.datastructures import ExpiringCollection, TreeAddress, TreeNode
from dicomtrolley.exceptions import DICOMTrolleyError, PermanentError
from dicomtrolley.fields import StudyLevel
from dicomtrolley.logs import get_module_logger

__all__ = [
    "CachedSearcher",
    "DICOMObjectCache",
    "DICOMTrolleyError",
    "ExpiringCollection",
    "NodeNotFound",
    "QueryCache",
    "TreeAddress",
    "TreeNode",
    "get_module_logger",
    "holds_whole_studies",
]

logger = get_module_logger("caching")

Address = TreeAddress


class NodeNotFound(PermanentError):
    """Not in the cache, or expired."""


class CacheArgumentError(PermanentError, ValueError):
    """A cache was given the wrong kind of argument (a ValueError, as in 4.1.0)."""


class DICOMObjectCache:
    """Studies, series and instances by reference, each kept for expiry_seconds.

    Parameters
    ----------
    initial_objects:
        Objects to cache right away.
    expiry_seconds:
        How long an object stays valid after it was added; None: forever.
    """

    def __init__(
        self,
        initial_objects: list[DICOMObject] | None = None,
        expiry_seconds: float | None = 600,
    ) -> None:
        if initial_objects and not isinstance(initial_objects, list):
            raise CacheArgumentError(
                f"Expected list but got {type(initial_objects)}. Did you forget "
                "[brackets] around a single object for initial_objects?"
            )
        self.expiry = expiry_seconds
        self._items: dict[Address, tuple[DICOMObject, float]] = {}
        self._lock = threading.RLock()
        for obj in initial_objects or []:
            self.add(obj)

    @staticmethod
    def to_address(ref: DICOMObjectReference) -> Address:
        if isinstance(ref, InstanceReference):
            return (ref.study_uid, ref.series_uid, ref.instance_uid)
        if isinstance(ref, SeriesReference):
            return (ref.study_uid, ref.series_uid)
        if isinstance(ref, StudyReference):
            return (ref.study_uid,)
        raise CacheArgumentError(f"Expected DICOM object reference, but got {ref!r}")

    @property
    def root(self) -> TreeNode:
        """A snapshot of what is cached, as a tree (4.1.0 kept its cache in one).

        Keys are study, series and instance UIDs; a node's ``data`` is the cached
        object, or None where only something below it is cached. Changing the
        snapshot does not change the cache.
        """
        tree = TreeNode()
        now = time.monotonic()
        with self._lock:
            for address, (obj, stamp) in self._items.items():
                if not self._expired(stamp, now):
                    tree.add(obj, address)
        return tree

    def add(self, obj: DICOMObject, prune: bool = True) -> None:
        """Cache obj and everything below it.

        With prune (the default) expired objects are dropped first.
        """
        if prune:
            self.prune_expired()
        now = time.monotonic()
        with self._lock:
            stack = [obj]
            while stack:
                item = stack.pop()
                self._items[self.to_address(item.reference())] = (item, now)
                stack.extend(item.children())

    def add_all(self, objects: Iterable[DICOMObject]) -> None:
        """Cache every object in objects (expired objects are dropped first)."""
        if isinstance(objects, DICOMObject):
            raise CacheArgumentError(
                "parameter 'objects' should be an iterable of DICOMObjects, not a "
                "single object; use add() for one object"
            )
        self.prune_expired()
        for obj in objects:
            self.add(obj, prune=False)

    def _expired(self, stamp: float, now: float) -> bool:
        return self.expiry is not None and now - stamp > self.expiry

    def prune_expired(self) -> None:
        """Drop everything that has expired."""
        now = time.monotonic()
        with self._lock:
            for address in [
                a for a, (_, t) in self._items.items() if self._expired(t, now)
            ]:
                del self._items[address]

    def retrieve(self, reference: DICOMObjectReference) -> DICOMObject:
        """The cached object for reference. NodeNotFound when absent or expired."""
        address = self.to_address(reference)
        with self._lock:
            entry = self._items.get(address)
            if entry is None:
                raise NodeNotFound(f"No node found in cache for reference {reference}")
            obj, stamp = entry
            if self._expired(stamp, time.monotonic()):
                del self._items[address]
                raise NodeNotFound(
                    f"No node found in cache for reference {reference}: it expired"
                )
            return obj


class QueryCache:
    """Which objects answered which query (by the query's type and JSON form).

    Each answer is kept as it was given, for as long as the object cache keeps
    objects. Only answers that hold whole studies (see :func:`holds_whole_studies`)
    are also put in the object cache, where ``find_study_by_id`` looks: a search
    for one series of a study must not later pass for the whole study.
    """

    def __init__(self, cache: DICOMObjectCache) -> None:
        self.cache = cache
        self.queries: dict[str, tuple[DICOMObjectReference, ...]] = {}
        self._answers: dict[str, tuple[list[DICOMObject], float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(query: Query) -> str:
        return f"{type(query).__name__}:{query.model_dump_json()}"

    def add_response(self, query: Query, response: Sequence[DICOMObject]) -> None:
        if holds_whole_studies(query):
            self.cache.add_all(response)
        key = self._key(query)
        with self._lock:
            self.queries[key] = tuple(x.reference() for x in response)
            self._answers[key] = (list(response), time.monotonic())

    def get_response(self, query: Query) -> list[Study]:
        """The cached answer to query. NodeNotFound when unknown or expired."""
        key = self._key(query)
        with self._lock:
            entry = self._answers.get(key)
            if entry is None:
                raise NodeNotFound(
                    f"Query {query.to_short_string()} not found in cache"
                )
            objects, stamp = entry
            if self.cache._expired(stamp, time.monotonic()):
                del self._answers[key]
                self.queries.pop(key, None)
                raise NodeNotFound(
                    f"The answer to {query.to_short_string()} has expired"
                )
            return list(objects)  # type: ignore[arg-type]


def holds_whole_studies(query: Query) -> bool:
    """True when every study query finds is complete down to its query level.

    A study-level search always is. A deeper search is when it filters on study
    attributes only; a filter on a series or instance attribute (SeriesInstanceUID,
    Modality ...) or a result limit can leave series or instances out.
    """
    if query.query_level == QueryLevels.STUDY:
        return True
    not_filters = {"query_level", "include_fields", "min_study_date", "max_study_date"}
    return all(
        name in StudyLevel.fields
        for name in query.filled_fields()
        if name not in not_filters
    )


class CachedSearcher(Searcher):
    """A searcher that answers from cache when it can."""

    def __init__(self, searcher: Searcher, cache: DICOMObjectCache) -> None:
        self.searcher = searcher
        self.cache = cache
        self.query_cache = QueryCache(cache)

    def __str__(self) -> str:
        return f"CachedSearcher for {self.searcher}"

    def find_studies(self, query: Query) -> Sequence[Study]:
        try:
            return self.query_cache.get_response(query)
        except NodeNotFound:
            studies = list(self.searcher.find_studies(query))
            self.query_cache.add_response(query, studies)
            return studies

    def find_study_by_id(
        self, study_uid: str, query_level: QueryLevels = QueryLevels.STUDY
    ) -> Study:
        try:
            cached = self.cache.retrieve(StudyReference(study_uid))
            if isinstance(cached, Study) and cached.max_object_depth() <= (
                DICOMObjectLevels.from_query_level(query_level)
            ):
                return cached
        except NodeNotFound:
            pass
        study = self.searcher.find_study_by_id(study_uid, query_level=query_level)
        self.cache.add(study)
        return study
