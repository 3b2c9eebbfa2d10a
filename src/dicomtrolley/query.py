"""Backend-agnostic search criteria: :class:`Query` and :class:`ExtendedQuery`.

Every searcher accepts a plain :class:`Query`; searcher-specific subclasses (MINT,
QIDO-RS, DICOM-QR) add parameters. A searcher converts any query into its own
type with :meth:`Query.init_from_query`, which refuses (UnSupportedParameterError)
rather than silently dropping a parameter it cannot express.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from dicomtrolley.exceptions import UnSupportedParameterError
from dicomtrolley.levels import QueryLevels

QuerySubType = TypeVar("QuerySubType", bound="Query")


def _parse_dicom_date(value: Any, kind: type[date] | type[datetime]) -> Any:
    """ "YYYYMMDD" (a DICOM DA value) as a date or datetime; anything else as is."""
    if isinstance(value, str) and len(value.strip()) == 8 and value.strip().isdigit():
        try:
            parsed = datetime.strptime(value.strip(), "%Y%m%d")
        except ValueError as error:
            raise ValueError(f"{value!r} is not a valid YYYYMMDD date") from error
        return parsed if kind is datetime else parsed.date()
    return value


class Query(BaseModel):
    """A DICOM search that every searcher understands.

    DICOM attributes use their keywords (``PatientID``); everything else uses
    Python names (``query_level``). ``*`` and ``?`` are wildcards where the
    server supports them. Unknown arguments are rejected.
    """

    model_config = ConfigDict(extra="forbid")

    StudyInstanceUID: str = ""
    AccessionNumber: str = ""
    PatientName: str = ""
    PatientID: str = ""
    ModalitiesInStudy: str = ""
    SeriesInstanceUID: str = ""

    query_level: QueryLevels = QueryLevels.STUDY
    max_study_date: datetime | None = None
    min_study_date: datetime | None = None
    include_fields: list[str] | None = Field(default_factory=list)

    @field_validator("min_study_date", "max_study_date", mode="before")
    @classmethod
    def _dicom_date(cls, value: Any) -> Any:
        """Read "YYYYMMDD" as a DICOM date (pydantic would take it as a timestamp)."""
        return _parse_dicom_date(value, datetime)

    @field_validator("include_fields")
    @classmethod
    def include_fields_check(
        cls, include_fields: list[str] | None, values: ValidationInfo
    ) -> list[str] | None:
        """Every include field must be a DICOM keyword (the 4.1.0 validator)."""
        for keyword in include_fields or []:
            cls.validate_keyword(keyword)
        return include_fields

    @staticmethod
    def validate_keyword(keyword: str) -> None:
        """Raise ValueError if keyword is not a DICOM keyword pydicom knows."""
        from pydicom.datadict import tag_for_keyword  # pydicom: when needed

        if tag_for_keyword(keyword) is None:  # (0000,0000) is a valid tag
            raise ValueError(f"{keyword} is not a valid DICOM keyword")

    @classmethod
    def init_from_query(cls: type[QuerySubType], query: Query) -> QuerySubType:
        """This query type, made from any Query's non-empty values.

        Raises
        ------
        UnSupportedParameterError
            When query sets a parameter this type does not have.
        """
        if type(query) is cls:
            return query
        params = {key: val for key, val in query.model_dump().items() if val}
        try:
            return cls(**params)
        except ValidationError as error:
            raise UnSupportedParameterError(
                f"Conversion from {query.to_short_string()} would ignore one or "
                f"more parameters: it sets parameters that {cls.__name__} does not "
                "support. Use a plain Query, or the searcher's own query type. "
                f"Details: {error}"
            ) from error

    def filled_fields(self) -> dict[str, Any]:
        """The parameters that are set (non-empty)."""
        return {key: val for key, val in self.model_dump().items() if val}

    def to_short_string(self) -> str:
        """A compact description for messages and logs."""
        filled = self.filled_fields()
        filled["query_level"] = QueryLevels(self.query_level).value
        return f"{type(self).__name__}: {filled}"


class ExtendedQuery(Query):
    """Query with the parameters that MINT and DICOM-QR share."""

    InstitutionName: str = ""
    PatientSex: str = ""
    StudyDescription: str = ""
    SeriesDescription: str = ""
    InstitutionalDepartmentName: str = ""
    PatientBirthDate: date | None = None

    @field_validator("PatientBirthDate", mode="before")
    @classmethod
    def _dicom_birth_date(cls, value: Any) -> Any:
        """Read "YYYYMMDD" as a DICOM date (pydantic would take it as a timestamp)."""
        return _parse_dicom_date(value, date)
