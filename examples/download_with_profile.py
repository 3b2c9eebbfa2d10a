"""Download with a server profile of the config file, as the command line does.

The profile says which protocols, URLs, auth, timeouts and workers to use (see
the README, "Profiles"); secrets come from the environment variables it names.

    DICOMTROLLEY_CONFIG      the config file (default ~/.config/dicomtrolley/config.toml)
    DICOMTROLLEY_PROFILE     the profile to use (required)
    DICOMTROLLEY_PATIENT_ID  whose studies to download (required)
    DICOMTROLLEY_OUTPUT      where to save them (default: ./downloads)
"""

import os

from dicomtrolley.config import load_profile
from dicomtrolley.core import Query
from dicomtrolley.storage import StorageDir

profile = load_profile()  # DICOMTROLLEY_PROFILE of DICOMTROLLEY_CONFIG
output = os.environ.get("DICOMTROLLEY_OUTPUT", "downloads")
trolley = profile.trolley(storage=StorageDir(output))

studies = trolley.find_studies(Query(PatientID=os.environ["DICOMTROLLEY_PATIENT_ID"]))
print(
    f"Found {len(studies)} studies with {profile.search_protocol}; downloading over "
    f"{profile.download[0]}"
)
report = trolley.download(
    studies, output_dir=output, use_async=True, max_workers=profile.workers
)
print(f"Saved {len(report.saved)} files, skipped {len(report.skipped)}, into {output}")
