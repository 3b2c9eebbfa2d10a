"""Download instances you already know by UID, with WADO-URI only (4.1.0 style).

No search: the references are made by hand. Settings from the environment:

    DICOMTROLLEY_WADO_URI_URL  e.g. https://pacs/wado (DICOMTROLLEY_WADO_URL,
                             the old name, still works with a warning)
    DICOMTROLLEY_USER, DICOMTROLLEY_PASSWORD   HTTP basic auth (optional)
    DICOMTROLLEY_INSTANCES   one or more "study_uid/series_uid/instance_uid",
                             separated by spaces
    DICOMTROLLEY_OUTPUT      where to save them (default: ./downloads)
"""

import os

import requests

from dicomtrolley.config import getenv
from dicomtrolley.core import InstanceReference
from dicomtrolley.storage import FlatStorageDir
from dicomtrolley.wado_uri import WadoURI

wado_uri_url = getenv("DICOMTROLLEY_WADO_URI_URL")
if not wado_uri_url:
    raise SystemExit("set DICOMTROLLEY_WADO_URI_URL to the WADO-URI endpoint")

session = requests.Session()
if os.environ.get("DICOMTROLLEY_USER"):
    session.auth = (
        os.environ["DICOMTROLLEY_USER"],
        os.environ["DICOMTROLLEY_PASSWORD"],
    )
wado = WadoURI(session, wado_uri_url)

references = [
    InstanceReference(*triple.split("/"))
    for triple in os.environ["DICOMTROLLEY_INSTANCES"].split()
]
output = os.environ.get("DICOMTROLLEY_OUTPUT", "downloads")
storage = FlatStorageDir(path=output)
for dataset in wado.datasets(references):
    storage.save(dataset)
    print(
        f"{dataset.SOPInstanceUID}: {dataset.get('Modality', '')} "
        f"{dataset.get('Rows', '?')}x{dataset.get('Columns', '?')}"
    )
print(f"Saved {len(references)} instances into {output}")
