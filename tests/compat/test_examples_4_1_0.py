"""dicomtrolley 4.1.0's documented examples, run against the emulator (issue 10).

The examples are kept, as the 4.1.0 documentation shows them, in
``tests/compat/examples_4_1_0/`` (each file names its source):

- ``README.md.txt``: the 4.1.0 README (from the 4.1.0 sdist);
- ``docs/{index,usage,concepts,authentication}.md.txt``: the 4.1.0 documentation
  pages (readthedocs), whose python blocks 4.1.0 tested with sybil, in order and in
  one namespace; ``run_doc_blocks.py`` runs them the same way, with real objects
  talking to the emulator where 4.1.0's namespace had mocks;
- ``examples/*.py.txt``: the scripts of 4.1.0's examples folder, which read their
  settings from environment variables (``use_wado_only`` partly reconstructed, and
  ``go_shopping_rad69`` not the 4.1.0 text: see their headers).

(``.txt``, so that linters and formatters leave the 4.1.0 code as it is.)

Each runs as a script (a subprocess of this Python, in a temporary folder). Only
URLs, hosts and ports, output paths (``/tmp``) and credentials are adapted: by
the environment variables the example scripts document, and by exact string
replacements in the documentation pages (none of their URLs or /tmp paths may be
left as documented). Plain
``requests.Session()`` objects of the pages get the emulator's user from a netrc
file (``NETRC``), as requests gives any session. The emulator serves studies made
for these examples: patients whose names start with B, studies ``1.1``, ``1.2``
and ``111``, series ``2.2`` holding instance ``3.3``, and the UIDs, accession
number and dates the examples ask for; whatever an example says it does (found
these studies, saved those files, byte for byte the emulator's files) is checked.

Blocks that cannot work on any server are asserted as they fail: usage.md
searches ``StudyInstanceUID='B*'`` (no UID starts with B), and authentication.md's
"Custom Auth" posts made-up login headers, so its session stays logged out.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ImplicitVRLittleEndian

from dicomtrolley.emulator import DimseService, Emulator, default_services
from dicomtrolley.synthetic import (
    SeriesSpec,
    StudySpec,
    instance_specs,
    make_dataset,
    write_dataset,
)
from tests.emulator.conftest import PASSWORD, USER
from tests.fakes import tree

DATA = Path(__file__).parent / "examples_4_1_0"
RUNNER = DATA / "run_doc_blocks.py"
REALM = "DefaultSystemRealm"
TIMEOUT = 60

# The UIDs the examples ask for.
WADO_ONLY_STUDY = "1.2.840.114350.2.357.3.798268.2.126847153.1"
WADO_ONLY_SERIES = (
    "1.2.840.113619.2.239.1783.1568025913.0.105",
    "1.2.840.113619.2.239.1783.1568025913.0.76",
)
WADO_ONLY_INSTANCES = (
    "1.2.840.113619.2.239.1783.1568025913.0.113",
    "1.2.840.113619.2.239.1783.1568025913.0.77.64",
)
RAD69_STUDY = "1.2.840.114350.2.357.2.798268.2.165355273.1"

B_STUDIES = ["1.1", "1.2", "111"]  # of the patients whose names start with B
PATIENT_1234 = ["1.1", "1.2"]

STUDIES = [
    StudySpec(
        "1234",
        "Baker^Bob",
        "1.1",
        "CT Thorax",
        (
            SeriesSpec("2.2", 1, "CT", "Axial", 3, rows=100, columns=100),
            SeriesSpec("2.3", 2, "CT", "Scout", 2),
        ),
        study_date="20200302",  # the first three days of March 2020
        accession_number="ACC11",
        patient_birth_date="19600101",
        patient_sex="M",
    ),
    StudySpec(
        "1234",
        "Baker^Bob",
        "1.2",
        "CT Abdomen",
        (
            SeriesSpec("1.2.1", 1, "CT", "Axial", 2),
            SeriesSpec("1.2.2", 2, "CT", "Scout", 1),
        ),
        study_date="20190610",  # between 2015-03-01 and 2020-03-01
        accession_number="1982043.02262661",
        patient_birth_date="19600101",
        patient_sex="M",
    ),
    StudySpec(
        "5678",
        "Brown^Betty",
        "111",
        "MR Knee",
        (SeriesSpec("111.1", 1, "MR", "T1", 2, ImplicitVRLittleEndian),),
        study_date="20230101",
        patient_sex="F",
    ),
    StudySpec(
        "9001",
        "Other^Olga",
        WADO_ONLY_STUDY,
        "CT",
        (
            SeriesSpec(WADO_ONLY_SERIES[0], 1, "CT", "A", 2),
            SeriesSpec(WADO_ONLY_SERIES[1], 2, "CT", "B", 2),
        ),
        study_date="20190909",
    ),
    StudySpec(
        "9002",
        "Radley^Ron",
        RAD69_STUDY,
        "MR Head",
        (SeriesSpec(RAD69_STUDY + ".1", 1, "MR", "T2", 3),),
        study_date="20210101",
    ),
]
# (series, index) -> SOP Instance UID, for the instances the examples name
SOP_UIDS = {
    ("2.2", 0): "3.3",
    (WADO_ONLY_SERIES[0], 0): WADO_ONLY_INSTANCES[0],
    (WADO_ONLY_SERIES[1], 0): WADO_ONLY_INSTANCES[1],
}


@dataclass
class Source:
    """The emulator's files: study -> series -> SOP Instance UID -> file."""

    tree: dict[str, dict[str, dict[str, Path]]] = field(default_factory=dict)

    def add(self, study: str, series: str, sop: str, path: Path) -> None:
        self.tree.setdefault(study, {}).setdefault(series, {})[sop] = path

    def instances(self, *studies: str) -> dict[str, Path]:
        return {
            sop: path
            for study in studies
            for series in self.tree[study].values()
            for sop, path in series.items()
        }

    def storage_dir(self, *studies: str) -> dict[str, bytes]:
        """What 4.1.0's StorageDir writes: study/series/instance, dots as _."""
        return {
            "/".join(uid.replace(".", "_") for uid in (study, series, sop)): (
                path.read_bytes()
            )
            for study in studies
            for series, files in self.tree[study].items()
            for sop, path in files.items()
        }


@dataclass
class Site:
    emulator: Emulator
    source: Source


def build(root: Path) -> Source:
    source = Source()
    for spec in instance_specs(STUDIES):
        ds = make_dataset(spec)
        sop = SOP_UIDS.get((spec.series.series_uid, spec.index))
        if sop:
            ds.SOPInstanceUID = sop
            ds.file_meta.MediaStorageSOPInstanceUID = sop
        sop = str(ds.SOPInstanceUID)
        study, series = spec.study.study_uid, spec.series.series_uid
        path = root / spec.study.patient_id / study / series / f"{sop}.dcm"
        write_dataset(path, ds)
        source.add(study, series, sop, path)
    return source


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("examples-4.1.0-pacs")
    source = build(root)
    services = [*default_services(), DimseService()]
    with Emulator(root, services=services) as emulator:
        yield Site(emulator, source)


def files_in(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(tree(folder))
        if path.is_file()
    }


def run(
    args: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("NETRC",)}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**base, "NO_PROXY": "127.0.0.1,localhost", **env},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


# -- the examples folder --------------------------------------------------------


def run_example(name: str, site: Site, tmp_path: Path) -> tuple[str, Path]:
    """Run examples/<name> as a script; returns its output and DOWNLOAD_PATH."""
    script = tmp_path / name
    script.write_text((DATA / "examples" / f"{name}.txt").read_text("utf-8"))
    out = tmp_path / "downloads"
    out.mkdir()
    emulator = site.emulator
    env = {
        "USER": USER,
        "PASSWORD": PASSWORD,
        "REALM": REALM,
        "LOGIN_URL": emulator.login_url,
        "MINT_URL": emulator.mint_url,
        "WADO_URL": emulator.wado_uri_url,
        "RAD69_URL": emulator.rad69_url,
        "DOWNLOAD_PATH": str(out),
        "HOST": emulator.host,
        "PORT": str(emulator.dimse.port),
        "AET": "TROLLEY410",
        "AEC": emulator.dimse.ae_title,
    }
    done = run([script.name], tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, out


def test_go_shopping(site: Site, tmp_path: Path) -> None:
    stdout, out = run_example("go_shopping.py", site, tmp_path)
    assert "Found 3 studies. Taking one with least instances" in stdout
    assert "Getting slice info for MintStudy 111" in stdout  # 2 instances
    assert stdout.rstrip().endswith("Done")
    assert files_in(out) == site.source.storage_dir("111")


def test_go_shopping_rad69(site: Site, tmp_path: Path) -> None:
    stdout, out = run_example("go_shopping_rad69.py", site, tmp_path)
    assert "Found 1 studies. Taking one with least instances" in stdout
    assert "Downloading study with 3" in stdout
    assert stdout.rstrip().endswith("Done")
    assert files_in(out) == site.source.storage_dir(RAD69_STUDY)


def test_use_wado_only(site: Site, tmp_path: Path) -> None:
    stdout, out = run_example("use_wado_only.py", site, tmp_path)
    assert f"Downloading 2 instances to {out}" in stdout
    assert stdout.rstrip().endswith("Done")
    wanted = site.source.instances(WADO_ONLY_STUDY)
    assert files_in(out) == {
        sop: wanted[sop].read_bytes() for sop in WADO_ONLY_INSTANCES
    }


def test_search_for_studies_mint(site: Site, tmp_path: Path) -> None:
    stdout, _ = run_example("search_for_studies_mint.py", site, tmp_path)
    lines = stdout.splitlines()
    # by accession number, then: B*, CT*, M, 2015-03-01..2020-03-01, instance level
    assert lines[:7] == [
        "Quick search for some studies",
        "Found 1 studies",
        "More extensive search",
        "Birthdates: ['19600101']",
        "Found 1 studies",
        "The first study contains 2 series",
        "The first thee instances in the first series are:",
    ]
    # then the (at most three) instances of the first series, one per line
    printed = [line.split() for line in lines[7:]]
    assert all(kind == "MintInstance" for kind, _ in printed), lines
    series_of_1_2 = [set(files) for files in site.source.tree["1.2"].values()]
    assert {uid for _, uid in printed} in series_of_1_2


def test_search_for_studies_dicom_qr(site: Site, tmp_path: Path) -> None:
    stdout, _ = run_example("search_for_studies_dicom_qr.py", site, tmp_path)
    assert stdout.splitlines() == [
        "Setting up DICOM query-retrieve",
        "Perform a search",
        f"Found {len(STUDIES)} studies",
    ]


# -- the README and the documentation pages --------------------------------------


@dataclass
class Page:
    """One page after its run: the report of each block and what was written."""

    returncode: int
    stderr: str
    blocks: list[dict[str, Any]]
    out: Path

    def block(self, index: int) -> dict[str, Any]:
        """The report of the page's block number index (0: the first)."""
        return self.blocks[index]


def replacements(site: Site, out: Path) -> list[tuple[str, str]]:
    """(as documented, for the emulator): URLs, host and port, paths, credentials."""
    emulator = site.emulator
    port = emulator.dimse.port
    return [
        ("https://server/wado_uri", emulator.wado_uri_url),
        ("https://server/wado_rs", emulator.dicomweb_url),
        ("https://server/wadors", emulator.dicomweb_url),
        ("https://server/wado", emulator.wado_uri_url),
        ("https://server/mint", emulator.mint_url),
        ("http://server/mint", emulator.mint_url),
        ("https://server/qido", emulator.dicomweb_url),
        ("http://server/qido", emulator.dicomweb_url),
        ("https://server/rad69", emulator.rad69_url),
        ("https://server/login", emulator.login_url),
        ('DICOMQR("host","123",', f'DICOMQR("{emulator.host}","{port}",'),
        ('host="hostname", port="123"', f'host="{emulator.host}", port="{port}"'),
        ('user="user"', f'user="{USER}"'),
        ('password="password"', f'password="{PASSWORD}"'),
        ('realm="realm"', f'realm="{REALM}"'),
        ("HTTPBasicAuth('user','password')", f"HTTPBasicAuth('{USER}','{PASSWORD}')"),
        ('{"user":"a_user"', f'{{"user":"{USER}"'),
        ('"password":"secret"}', f'"password":"{PASSWORD}"}}'),
        ("'/tmp", f"'{out}"),
        ('"/tmp', f'"{out}'),
    ]


def run_page(page: str, site: Site, tmp_path: Path, netrc: bool = True) -> Page:
    """Adapt a page to the emulator (see replacements) and run its blocks."""
    out = tmp_path / "tmp"
    out.mkdir()
    text = (DATA / page).read_text("utf-8")
    paths = len(re.findall(r"['\"]/tmp", text))
    for documented, adapted in replacements(site, out):
        text = text.replace(documented, adapted)
    assert text.count(str(out)) == paths, "an output path was left as documented"
    left = re.findall(r"https?://server\S*", text)
    assert not left, f"left as documented: {left}"
    adapted_page = tmp_path / Path(page).name
    adapted_page.write_text(text, "utf-8")
    netrc_file = tmp_path / "netrc"
    if netrc:
        netrc_file.write_text(
            f"machine {site.emulator.host} login {USER} password {PASSWORD}\n"
        )
    env = {
        "NETRC": str(netrc_file),  # absent file: no credentials
        "DTR_MINT_URL": site.emulator.mint_url,
        "DTR_WADO_URI_URL": site.emulator.wado_uri_url,
        "DTR_AN_INSTANCE": "1.1/2.2/3.3" if page.endswith("usage.md.txt") else "",
        "DTR_PROBE_INSTANCE": "1.1/2.2/3.3",
    }
    done = run([str(RUNNER), adapted_page.name, "report.json"], tmp_path, env)
    report = tmp_path / "report.json"
    assert report.exists(), done.stdout + done.stderr
    blocks = json.loads(report.read_text("utf-8"))["blocks"]
    return Page(done.returncode, done.stderr, blocks, out)


def uids(summaries: list[str]) -> list[str]:
    """The UIDs of summaries such as 'MintStudy 1.1'."""
    return [text.split()[-1] for text in summaries]


def found(block: dict[str, Any], name: str = "studies") -> list[str]:
    return uids(block["bound"][name]["summary"])


def assert_ok(page: Page, *indexes: int) -> None:
    for index in indexes:
        block = page.block(index)
        assert block["error"] is None, block.get("traceback")


def assert_basic_usage(page: Page, site: Site) -> None:
    """README / index.md 'Basic usage': find B*, download the first one."""
    assert len(page.blocks) == 1
    assert page.returncode == 0, page.stderr
    assert_ok(page, 0)
    studies = found(page.block(0))
    assert sorted(studies) == B_STUDIES
    written = files_in(page.out)
    assert written == {
        f"trolley/{path}": data
        for path, data in site.source.storage_dir(studies[0]).items()
    }


def test_readme(site: Site, tmp_path: Path) -> None:
    page = run_page("README.md.txt", site, tmp_path)
    assert_basic_usage(page, site)


def test_docs_index(site: Site, tmp_path: Path) -> None:
    page = run_page("docs/index.md.txt", site, tmp_path)
    assert_basic_usage(page, site)


def assert_made(
    block: dict[str, Any], name: str, kind: str, url: str, probe: Any
) -> None:
    made = block["bound"][name]
    assert (made["type"], made.get("url"), made["probe"]) == (kind, url, probe)


def assert_trolley(
    block: dict[str, Any],
    searcher: tuple[str, str | None],
    downloader: tuple[str, str],
    storage: str = "StorageDir",
    probe: Any = B_STUDIES,
) -> None:
    made = block["bound"]["trolley"]
    assert made["type"] == "Trolley"
    assert (made["searcher"]["type"], made["searcher"].get("url")) == searcher
    assert (made["downloader"]["type"], made["downloader"]["url"]) == downloader
    assert made["storage"] == storage
    assert made["probe"] == probe


def test_docs_usage(site: Site, tmp_path: Path) -> None:
    page = run_page("docs/usage.md.txt", site, tmp_path)
    emulator, source = site.emulator, site.source
    mint = ("Mint", emulator.mint_url)
    wado_uri = ("WadoURI", emulator.wado_uri_url)
    assert len(page.blocks) == 13
    assert_ok(page, *(index for index in range(13) if index != 3))
    assert page.returncode == 1  # block 3 fails, below

    # Basic example: B* found, the first one downloaded into /tmp/trolley
    basic = found(page.block(0))
    assert sorted(basic) == B_STUDIES
    assert_trolley(page.block(0), mint, wado_uri)
    # Finding studies: B*; CT in the first three days of March 2020
    assert sorted(found(page.block(1))) == B_STUDIES
    assert found(page.block(2)) == ["1.1"]
    # Finding series and instance details: no UID starts with B, so nothing is
    # found on any server, and studies[0] fails (4.1.0 tested it on a mock).
    details = page.block(3)
    assert details["error"] == "IndexError: list index out of range"
    assert found(details) == []
    # an_instance.data, .Rows ('{int} 100'), ["Rows"]
    data, rows, element = page.block(4)["values"]
    assert data.startswith("Dataset [") and "'Rows'" in data
    assert rows == 100
    assert element == "DataElement Rows 100"
    # Downloading images: B* at instance level, then downloads (checked below)
    assert sorted(found(page.block(5))) == B_STUDIES
    # Downloading datasets: patient 1234, each saved as /tmp/<SOP UID>.dcm
    assert sorted(found(page.block(7))) == PATIENT_1234
    # Download format: FlatStorageDir; a DICOMDiskStorage subclass
    assert_trolley(page.block(8), mint, wado_uri, "FlatStorageDir")
    assert page.block(8)["bound"]["storage"]["type"] == "FlatStorageDir"
    assert_trolley(page.block(9), mint, wado_uri, "MyStorage")
    # Caching
    assert_trolley(page.block(10), ("CachedSearcher", None), wado_uri)
    assert page.block(10)["bound"]["searcher"]["probe"] == B_STUDIES
    # Logging: the 'trolley' logger, and the library logs below it from then on
    assert page.block(11)["bound"]["root_logger"]["summary"] == (
        "Logger <Logger trolley (DEBUG)>"
    )
    assert re.search(r"^DEBUG:trolley\.", page.stderr, re.MULTILINE)
    # Ignoring RAD69 errors
    assert_trolley(page.block(12), mint, ("Rad69", emulator.rad69_url))

    expected = {
        f"trolley/{path}": data for path, data in source.storage_dir(basic[0]).items()
    }
    expected.update(source.storage_dir(*B_STUDIES))  # /tmp: images, references
    expected.update(
        {
            f"{sop}.dcm": path.read_bytes()
            for sop, path in source.instances(*PATIENT_1234).items()
        }
    )
    assert files_in(page.out) == expected


def test_docs_concepts(site: Site, tmp_path: Path) -> None:
    page = run_page("docs/concepts.md.txt", site, tmp_path)
    emulator, source = site.emulator, site.source
    mint = ("Mint", emulator.mint_url)
    wado_uri = ("WadoURI", emulator.wado_uri_url)
    assert len(page.blocks) == 16
    assert page.returncode == 0, page.stderr
    assert_ok(page, *range(16))

    assert_trolley(page.block(0), mint, wado_uri)
    assert sorted(found(page.block(1))) == B_STUDIES
    assert_trolley(page.block(3), mint, wado_uri)  # then downloads study 111
    # Interchangeable backends: a DICOMQR searcher, swapped for QidoRS
    assert_trolley(page.block(4), ("QidoRS", emulator.dicomweb_url), wado_uri)
    # Query: 'Bak*', 2015-03-01..2020-03-01, instance level (over QIDO-RS now)
    assert found(page.block(5)) == ["1.2"]
    # Query subtypes: MintQuery(PatientID='1234', limit=5)
    subtype = page.block(6)
    assert_trolley(subtype, mint, wado_uri)
    assert [sorted(uids(value)) for value in subtype["values"]] == [PATIENT_1234]
    # DICOMObject: studies, studies[0], .series[0], .series[0].instances[:3]
    studies, first, series, instances = page.block(7)["values"]
    assert sorted(uids(studies)) == B_STUDIES
    assert first == studies[0]
    in_first = source.tree[uids([first])[0]]
    assert uids([series])[0] in in_first
    in_series = in_first[uids([series])[0]]
    assert len(instances) == min(3, len(in_series))
    assert set(uids(instances)) <= set(in_series)
    # Searcher and Downloader classes (constructed; each probe used them once)
    qr = page.block(10)["bound"]["searcher"]
    assert (qr["type"], qr["host"], qr["port"], qr["aet"], qr["aec"]) == (
        "DICOMQR",
        emulator.host,
        str(emulator.dimse.port),  # a str, as documented
        "DICOMTROLLEY",
        "ANY-SCP",
    )
    assert_made(page.block(11), "searcher", "Mint", emulator.mint_url, B_STUDIES)
    assert_made(page.block(12), "searcher", "QidoRS", emulator.dicomweb_url, B_STUDIES)
    assert_made(page.block(13), "downloader", "WadoURI", emulator.wado_uri_url, ["3.3"])
    assert_made(page.block(14), "searcher", "Rad69", emulator.rad69_url, ["3.3"])
    assert_made(page.block(15), "searcher", "WadoRS", emulator.dicomweb_url, ["3.3"])
    # downloads into /tmp: study 1.2, study 111, B* and its parts, 1.1 references
    assert files_in(page.out) == source.storage_dir(*B_STUDIES)


def test_docs_authentication(site: Site, tmp_path: Path) -> None:
    page = run_page("docs/authentication.md.txt", site, tmp_path, netrc=False)
    emulator = site.emulator
    assert len(page.blocks) == 3
    assert page.returncode == 0, page.stderr
    assert_ok(page, *range(3))
    # Vitrea Auth: the session logs in by itself
    assert_made(page.block(0), "searcher", "Mint", emulator.mint_url, B_STUDIES)
    # Basic Auth
    assert_trolley(
        page.block(1),
        ("QidoRS", emulator.dicomweb_url),
        ("WadoRS", emulator.dicomweb_url),
    )
    # Custom Auth: headers 'user' and 'password' are no login to a Vitrea (nor to
    # the emulator), so the session stays logged out: the login is refused and the
    # trolley's search is an authentication error.
    custom = page.block(2)
    (login,) = custom["values"]
    assert re.fullmatch(r"Response <Response \[4\d\d\]>", login), login
    made = custom["bound"]["trolley"]
    assert (made["searcher"]["type"], made["searcher"]["url"]) == (
        "Mint",
        emulator.mint_url,
    )
    assert (made["downloader"]["type"], made["downloader"]["url"]) == (
        "WadoRS",
        emulator.dicomweb_url,
    )
    assert made["probe"].startswith("DICOMTrolleyAuthError: "), made["probe"]
    assert files_in(page.out) == {}
