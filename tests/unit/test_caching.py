"""DICOMObjectCache, QueryCache and CachedSearcher, with a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from dicomtrolley.caching import (
    CachedSearcher,
    DICOMObjectCache,
    NodeNotFound,
    QueryCache,
    holds_whole_studies,
)
from dicomtrolley.core import (
    ExtendedQuery,
    InstanceReference,
    Query,
    QueryLevels,
    Searcher,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.exceptions import DICOMTrolleyError
from tests.conftest import StudyFactory


class Clock:
    """Replaces time.monotonic in dicomtrolley.caching."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("time.monotonic", fake)
    return fake


class CountingSearcher(Searcher):
    """Answers from a fixed set of studies and counts the calls it gets."""

    def __init__(self, answer: Callable[[Query], list[Study]]) -> None:
        self.answer = answer
        self.find_studies_calls: list[Query] = []
        self.by_id_calls: list[tuple[str, QueryLevels]] = []

    def find_studies(self, query: Query) -> Sequence[Study]:
        self.find_studies_calls.append(query)
        return self.answer(query)

    def find_study_by_id(
        self, study_uid: str, query_level: QueryLevels = QueryLevels.STUDY
    ) -> Study:
        self.by_id_calls.append((study_uid, QueryLevels(query_level)))
        return super().find_study_by_id(study_uid, query_level)


@pytest.fixture
def pacs(make_study: StudyFactory) -> Callable[[Query], list[Study]]:
    """Study 1 (series 1.1 with 2 instances, 1.2 with 1) and study 2 (1 instance)."""
    layout = {
        "1": {"1.1": ["1.1.1", "1.1.2"], "1.2": ["1.2.1"]},
        "2": {"2.1": ["2.1.1"]},
    }

    def answer(query: Query) -> list[Study]:
        level = QueryLevels(query.query_level)
        studies = []
        for uid, series in layout.items():
            if query.StudyInstanceUID and query.StudyInstanceUID != uid:
                continue
            wanted = {
                s: (None if level == QueryLevels.SERIES else i)
                for s, i in series.items()
                if not query.SeriesInstanceUID or s == query.SeriesInstanceUID
            }
            studies.append(
                make_study(uid, {} if level == QueryLevels.STUDY else wanted)
            )
        return studies

    return answer


# --------------------------------------------------------------------------- #
# DICOMObjectCache
# --------------------------------------------------------------------------- #


def test_cache_retrieves_objects_and_their_children(
    clock: Clock, make_study: StudyFactory
) -> None:
    study = make_study("1", {"1.1": ["1.1.1"]})
    cache = DICOMObjectCache([study])
    assert cache.retrieve(StudyReference("1")) is study
    assert cache.retrieve(SeriesReference("1", "1.1")) is study["1.1"]
    assert (
        cache.retrieve(InstanceReference("1", "1.1", "1.1.1")) is study["1.1"]["1.1.1"]
    )
    with pytest.raises(NodeNotFound, match=r"1\.2"):
        cache.retrieve(SeriesReference("1", "1.2"))


def test_cache_entries_expire(clock: Clock, make_study: StudyFactory) -> None:
    cache = DICOMObjectCache(expiry_seconds=60)
    cache.add(make_study("1", {"1.1": None}))
    clock.now += 60
    assert cache.retrieve(StudyReference("1")).uid == "1"  # exactly 60 s: still valid
    clock.now += 0.5
    with pytest.raises(NodeNotFound, match="expired"):
        cache.retrieve(StudyReference("1"))
    with pytest.raises(NodeNotFound):  # gone now, not just expired
        cache.retrieve(StudyReference("1"))
    cache.prune_expired()
    with pytest.raises(NodeNotFound):
        cache.retrieve(SeriesReference("1", "1.1"))


def test_re_adding_refreshes_the_expiry(clock: Clock, make_study: StudyFactory) -> None:
    cache = DICOMObjectCache(expiry_seconds=10)
    cache.add(make_study("1"))
    clock.now += 8
    cache.add(make_study("1"))
    clock.now += 8
    assert cache.retrieve(StudyReference("1")).uid == "1"


def test_prune_expired_keeps_fresh_entries(
    clock: Clock, make_study: StudyFactory
) -> None:
    cache = DICOMObjectCache(expiry_seconds=10)
    cache.add(make_study("3"))
    clock.now += 5
    cache.add(make_study("4"))
    clock.now += 6
    cache.prune_expired()
    assert cache.retrieve(StudyReference("4")).uid == "4"
    with pytest.raises(NodeNotFound):
        cache.retrieve(StudyReference("3"))


def test_no_expiry(clock: Clock, make_study: StudyFactory) -> None:
    cache = DICOMObjectCache(expiry_seconds=None)
    cache.add(make_study("1"))
    clock.now += 10**9
    cache.prune_expired()
    assert cache.retrieve(StudyReference("1")).uid == "1"


def test_cache_refuses_single_objects_where_lists_are_expected(
    make_study: StudyFactory,
) -> None:
    study = make_study("1")
    with pytest.raises(DICOMTrolleyError, match="brackets"):
        DICOMObjectCache(study)  # type: ignore[arg-type]
    with pytest.raises(DICOMTrolleyError):
        DICOMObjectCache().add_all(study)  # type: ignore[arg-type]


def test_to_address() -> None:
    assert DICOMObjectCache.to_address(StudyReference("1")) == ("1",)
    assert DICOMObjectCache.to_address(SeriesReference("1", "2")) == ("1", "2")
    assert DICOMObjectCache.to_address(InstanceReference("1", "2", "3")) == (
        "1",
        "2",
        "3",
    )


# --------------------------------------------------------------------------- #
# QueryCache
# --------------------------------------------------------------------------- #


def test_query_cache_round_trip(clock: Clock, make_study: StudyFactory) -> None:
    cache = DICOMObjectCache(expiry_seconds=60)
    queries = QueryCache(cache)
    query = Query(PatientID="P", query_level="SERIES")
    studies = [make_study("1", {"1.1": None}), make_study("2", {"2.1": None})]
    queries.add_response(query, studies)
    assert queries.get_response(Query(PatientID="P", query_level="SERIES")) == studies
    assert queries.queries[next(iter(queries.queries))] == (
        StudyReference("1"),
        StudyReference("2"),
    )
    with pytest.raises(NodeNotFound, match="not found"):
        queries.get_response(Query(PatientID="P"))
    # the query type is part of the key
    with pytest.raises(NodeNotFound):
        queries.get_response(ExtendedQuery(PatientID="P", query_level="SERIES"))
    clock.now += 61
    with pytest.raises(NodeNotFound, match="expired"):
        queries.get_response(query)
    with pytest.raises(NodeNotFound, match="not found"):
        queries.get_response(query)


def test_holds_whole_studies() -> None:
    assert holds_whole_studies(Query(SeriesInstanceUID="1.1"))  # STUDY level
    assert holds_whole_studies(Query(PatientID="1", query_level="INSTANCE"))
    assert holds_whole_studies(
        ExtendedQuery(PatientSex="F", StudyInstanceUID="1", query_level="SERIES")
    )
    assert not holds_whole_studies(
        Query(StudyInstanceUID="1", SeriesInstanceUID="1.1", query_level="INSTANCE")
    )
    assert not holds_whole_studies(
        ExtendedQuery(SeriesDescription="Axial", query_level="SERIES")
    )


# --------------------------------------------------------------------------- #
# CachedSearcher
# --------------------------------------------------------------------------- #


def test_cached_searcher_hits_and_misses(
    clock: Clock, pacs: Callable[[Query], list[Study]]
) -> None:
    searcher = CountingSearcher(pacs)
    cached = CachedSearcher(searcher, DICOMObjectCache(expiry_seconds=100))
    assert "CachedSearcher for" in str(cached)
    first = cached.find_studies(Query(query_level="SERIES"))
    assert [s.uid for s in first] == ["1", "2"]
    again = cached.find_studies(Query(query_level="SERIES"))
    assert again == first
    assert len(searcher.find_studies_calls) == 1
    cached.find_studies(Query(query_level="INSTANCE"))
    assert len(searcher.find_studies_calls) == 2
    clock.now += 101
    cached.find_studies(Query(query_level="SERIES"))
    assert len(searcher.find_studies_calls) == 3


def test_find_study_goes_through_the_cache(
    clock: Clock, pacs: Callable[[Query], list[Study]]
) -> None:
    searcher = CountingSearcher(pacs)
    cached = CachedSearcher(searcher, DICOMObjectCache())
    assert cached.find_study(Query(StudyInstanceUID="2")).uid == "2"
    assert cached.find_study(Query(StudyInstanceUID="2")).uid == "2"
    assert len(searcher.find_studies_calls) == 1


def test_find_study_by_id_depth_rules(
    clock: Clock, pacs: Callable[[Query], list[Study]]
) -> None:
    searcher = CountingSearcher(pacs)
    cached = CachedSearcher(searcher, DICOMObjectCache())
    series_level = cached.find_study_by_id("1", query_level=QueryLevels.SERIES)
    assert len(searcher.by_id_calls) == 1
    # cached copy is deep enough for STUDY and SERIES
    assert cached.find_study_by_id("1") is series_level
    assert cached.find_study_by_id("1", QueryLevels.SERIES) is series_level
    assert len(searcher.by_id_calls) == 1
    # but not for INSTANCE: ask the searcher, then cache the deeper answer
    deep = cached.find_study_by_id("1", QueryLevels.INSTANCE)
    assert len(deep.all_instances()) == 3
    assert searcher.by_id_calls[-1] == ("1", QueryLevels.INSTANCE)
    assert cached.find_study_by_id("1", QueryLevels.SERIES) is deep
    assert cached.find_study_by_id("1", QueryLevels.INSTANCE) is deep
    assert len(searcher.by_id_calls) == 2


def test_find_study_by_id_uses_whole_studies_from_find_studies(
    clock: Clock, pacs: Callable[[Query], list[Study]]
) -> None:
    searcher = CountingSearcher(pacs)
    cached = CachedSearcher(searcher, DICOMObjectCache())
    cached.find_studies(Query(query_level="INSTANCE"))
    assert len(cached.find_study_by_id("1", QueryLevels.INSTANCE).all_instances()) == 3
    assert searcher.by_id_calls == []


def test_a_one_series_answer_does_not_pass_for_the_whole_study(
    clock: Clock, pacs: Callable[[Query], list[Study]]
) -> None:
    """4.1.0 cached the partial study and later returned it by study UID."""
    searcher = CountingSearcher(pacs)
    cached = CachedSearcher(searcher, DICOMObjectCache())
    whole = cached.find_study_by_id("1", QueryLevels.INSTANCE)
    one_series = Query(
        StudyInstanceUID="1", SeriesInstanceUID="1.2", query_level="INSTANCE"
    )
    (partial,) = cached.find_studies(one_series)
    assert [s.uid for s in partial.series] == ["1.2"]
    # the whole study is still what a look-up by UID gives
    assert cached.find_study_by_id("1", QueryLevels.INSTANCE) is whole
    assert len(searcher.by_id_calls) == 1
    # and the series query still gets its own answer, from cache
    (again,) = cached.find_studies(one_series)
    assert [s.uid for s in again.series] == ["1.2"]
    assert len(searcher.find_studies_calls) == 2  # one by id, one series query


def test_partial_answer_is_not_used_by_id_on_a_cold_cache(
    clock: Clock, pacs: Callable[[Query], list[Study]]
) -> None:
    searcher = CountingSearcher(pacs)
    cached = CachedSearcher(searcher, DICOMObjectCache())
    cached.find_studies(
        Query(StudyInstanceUID="1", SeriesInstanceUID="1.1", query_level="INSTANCE")
    )
    study = cached.find_study_by_id("1", QueryLevels.INSTANCE)
    assert [s.uid for s in study.series] == ["1.1", "1.2"]
    assert searcher.by_id_calls == [("1", QueryLevels.INSTANCE)]


def test_find_study_by_id_after_expiry_asks_again(
    clock: Clock, pacs: Callable[[Query], list[Study]]
) -> None:
    searcher = CountingSearcher(pacs)
    cached = CachedSearcher(searcher, DICOMObjectCache(expiry_seconds=5))
    cached.find_study_by_id("2")
    clock.now += 6
    cached.find_study_by_id("2")
    assert len(searcher.by_id_calls) == 2
