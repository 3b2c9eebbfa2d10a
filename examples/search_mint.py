"""Search a Vitrea server over MINT, in the dicomtrolley 4.1.0 style.

Server settings come from the environment:

    DICOMTROLLEY_LOGIN_URL   e.g. https://vitrea/login
    DICOMTROLLEY_MINT_URL    e.g. https://vitrea/rest/api/vault/mint
    DICOMTROLLEY_USER, DICOMTROLLEY_PASSWORD
    DICOMTROLLEY_PATIENT_ID  what to search for (default: everything, "*")

Run against the built-in emulator: `dicomtrolley serve --data DIR` prints the URLs.
"""

import os

from dicomtrolley.auth import create_session
from dicomtrolley.core import QueryLevels
from dicomtrolley.mint import Mint, MintQuery

session = create_session(
    os.environ["DICOMTROLLEY_LOGIN_URL"],
    os.environ["DICOMTROLLEY_USER"],
    os.environ["DICOMTROLLEY_PASSWORD"],
)
mint = Mint(session, os.environ["DICOMTROLLEY_MINT_URL"])

studies = mint.find_studies(
    MintQuery(
        PatientID=os.environ.get("DICOMTROLLEY_PATIENT_ID", "*"),
        query_level=QueryLevels.SERIES,
        include_fields=["PatientName", "StudyDate", "Modality", "SeriesDescription"],
    )
)
print(f"Found {len(studies)} studies")
for study in studies:
    print(
        f"{study} {study.data.get('PatientName', '')} {study.data.get('StudyDate', '')}"
    )
    for series in study.series:
        print(
            f"    {series} {series.data.get('Modality', '')} "
            f"{series.data.get('SeriesDescription', '')}"
        )
