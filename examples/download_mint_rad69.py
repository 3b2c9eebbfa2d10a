"""Search over MINT and download over IHE RAD-69 behind a Vitrea login (4.1.0 style).

Server settings come from the environment:

    DICOMTROLLEY_LOGIN_URL   e.g. https://vitrea/login
    DICOMTROLLEY_MINT_URL    e.g. https://vitrea/rest/api/vault/mint
    DICOMTROLLEY_RAD69_URL   e.g. https://vitrea/rad69
    DICOMTROLLEY_USER, DICOMTROLLEY_PASSWORD
    DICOMTROLLEY_PATIENT_ID  whose studies to download (required)
    DICOMTROLLEY_OUTPUT      where to save them (default: ./downloads)

RAD-69 sends only the transfer syntaxes asked for: list every one your PACS
stores. Instances the server does not have are skipped with a warning.
"""

import os

from dicomtrolley.auth import create_session
from dicomtrolley.core import Query
from dicomtrolley.exceptions import XDSMissingDocumentError
from dicomtrolley.mint import Mint
from dicomtrolley.rad69 import Rad69
from dicomtrolley.trolley import Trolley

session = create_session(
    os.environ["DICOMTROLLEY_LOGIN_URL"],
    os.environ["DICOMTROLLEY_USER"],
    os.environ["DICOMTROLLEY_PASSWORD"],
)
trolley = Trolley(
    searcher=Mint(session, os.environ["DICOMTROLLEY_MINT_URL"]),
    downloader=Rad69(
        session,
        os.environ["DICOMTROLLEY_RAD69_URL"],
        errors_to_ignore=[XDSMissingDocumentError],
        transfer_syntax_list=[
            "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
            "1.2.840.10008.1.2",  # Implicit VR Little Endian
            "1.2.840.10008.1.2.5",  # RLE Lossless
            "1.2.840.10008.1.2.4.70",  # JPEG Lossless
        ],
    ),
)

studies = trolley.find_studies(Query(PatientID=os.environ["DICOMTROLLEY_PATIENT_ID"]))
print(f"Found {len(studies)} studies; downloading over RAD-69")
output = os.environ.get("DICOMTROLLEY_OUTPUT", "downloads")
report = trolley.download(studies, output_dir=output, use_async=True, max_workers=4)
print(f"Saved {len(report.saved)} files, skipped {len(report.skipped)}, into {output}")
