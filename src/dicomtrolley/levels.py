"""The study → series → instance levels, as a query sees them and as objects do."""

from __future__ import annotations

from enum import Enum, IntEnum


class DICOMObjectLevels(IntEnum):
    """Where an object sits in the DICOM tree. Ordered: STUDY is the highest."""

    STUDY = 2
    SERIES = 1
    INSTANCE = 0

    @classmethod
    def from_query_level(cls, level: QueryLevels | str) -> DICOMObjectLevels:
        """The object level that a query at ``level`` returns as its deepest."""
        return cls[QueryLevels(level).value]


class QueryLevels(str, Enum):
    """How deep a search goes: only studies, also series, or also instances."""

    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "INSTANCE"

    @classmethod
    def from_object_level(cls, level: DICOMObjectLevels | int) -> QueryLevels:
        """The query level that returns objects down to ``level``."""
        return cls(DICOMObjectLevels(level).name)

    def __str__(self) -> str:
        return self.value
