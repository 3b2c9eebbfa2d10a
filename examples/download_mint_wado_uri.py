"""Search over MINT and download over WADO-URI behind a Vitrea login (4.1.0 style).

Server settings come from the environment:

    DICOMTROLLEY_LOGIN_URL   e.g. https://vitrea/login
    DICOMTROLLEY_MINT_URL    e.g. https://vitrea/rest/api/vault/mint
    DICOMTROLLEY_WADO_URI_URL  e.g. https://vitrea/wado (DICOMTROLLEY_WADO_URL,
                             the old name, still works with a warning)
    DICOMTROLLEY_USER, DICOMTROLLEY_PASSWORD
    DICOMTROLLEY_PATIENT_ID  whose studies to download (required)
    DICOMTROLLEY_OUTPUT      where to save them (default: ./downloads)

The Trolley asks MINT for the instances that WADO-URI needs, then downloads four
at a time. A second run skips the files already present.
"""

import os

import requests

from dicomtrolley.auth import VitreaAuth
from dicomtrolley.config import getenv
from dicomtrolley.core import Query
from dicomtrolley.mint import Mint
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_uri import WadoURI

wado_uri_url = getenv("DICOMTROLLEY_WADO_URI_URL")
if not wado_uri_url:
    raise SystemExit("set DICOMTROLLEY_WADO_URI_URL to the WADO-URI endpoint")

session = requests.Session()
session.auth = VitreaAuth(
    login_url=os.environ["DICOMTROLLEY_LOGIN_URL"],
    user=os.environ["DICOMTROLLEY_USER"],
    password=os.environ["DICOMTROLLEY_PASSWORD"],
    realm="DefaultSystemRealm",
)
trolley = Trolley(
    searcher=Mint(session, os.environ["DICOMTROLLEY_MINT_URL"]),
    downloader=WadoURI(session, wado_uri_url),
)

studies = trolley.find_studies(Query(PatientID=os.environ["DICOMTROLLEY_PATIENT_ID"]))
print(f"Found {len(studies)} studies; downloading")
output = os.environ.get("DICOMTROLLEY_OUTPUT", "downloads")
report = trolley.download(studies, output_dir=output, use_async=True, max_workers=4)
print(f"Saved {len(report.saved)} files, skipped {len(report.skipped)}, into {output}")
