"""``dicomtrolley demo``: the whole job against the built-in emulator PACS.

Generates the synthetic demo studies once (in the cache folder), starts the
reference emulator in-process on a free loopback port, logs in the Vitrea way,
searches over MINT at study, series and instance level, and downloads every
study with each chosen protocol (WADO-URI, WADO-RS, RAD-69, C-GET, C-MOVE), with
progress bars, into ``./dicomtrolley-demo``.
Everything it does goes through the public API, as a user's script would.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import click
import requests
from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.tree import Tree

from dicomtrolley.auth import create_session
from dicomtrolley.cli.download import summary
from dicomtrolley.cli.progress import RichProgress
from dicomtrolley.core import Downloader, QueryLevels, Study
from dicomtrolley.dicom_qr import DICOMQRGet, DICOMQRMove
from dicomtrolley.emulator import DimseService, Emulator, default_services
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.mint import Mint, MintQuery
from dicomtrolley.rad69 import Rad69
from dicomtrolley.storage import TemplateStorage
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI

DEMO_USER = ("trolley", "trolley")
LAYOUT = "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
STUDY_FIELDS = [
    "PatientID",
    "PatientName",
    "StudyDate",
    "ModalitiesInStudy",
    "StudyDescription",
]
SERIES_FIELDS = ["Modality", "SeriesDescription", "SeriesNumber"]
PROTOCOLS = ("wado-uri", "wado-rs", "rad69", "c-get", "c-move")
DEMO_STORE_AET = "DEMOSTORE"
#: RAD-69 has no "as stored": ask for every transfer syntax the demo studies use.
RAD69_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
]
_COMPLETE = ".complete"


def default_data_dir() -> Path:
    """Where the generated demo studies are kept between runs."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "dicomtrolley" / "demo-data"


def ensure_demo_data(folder: Path, console: Console) -> Path:
    """The demo studies in folder, generated first when absent (atomically)."""
    if (folder / _COMPLETE).exists():
        return folder
    from dicomtrolley import synthetic

    console.print(f"Generating the demo studies into [bold]{folder}[/] ...")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-data-", dir=folder.parent))
    try:
        synthetic.write_studies(staging)
        (staging / _COMPLETE).write_text("written by dicomtrolley demo\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def series_tree(studies: Sequence[Study]) -> Tree:
    """Studies with their series, as a rich tree."""
    tree = Tree("[bold]Studies and series (MINT, SERIES level)")
    for study in studies:
        data = study.data
        label = (
            f"[bold]{data.get('PatientName', '')}[/] {data.get('StudyDate', '')} "
            f"{data.get('StudyDescription', '')} [dim]{study.uid}"
        )
        branch = tree.add(label)
        for series in study.series:
            sdata = series.data
            branch.add(
                f"{sdata.get('Modality', '')} #{sdata.get('SeriesNumber', '')} "
                f"{sdata.get('SeriesDescription', '')} [dim]{series.uid}"
            )
    return tree


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _downloader(
    protocol: str, session: requests.Session, emulator: Emulator, store_port: int
) -> Downloader:
    if protocol in ("c-get", "c-move"):
        dimse = emulator.dimse
        if protocol == "c-get":
            return DICOMQRGet("127.0.0.1", dimse.port, aec=dimse.ae_title)
        return DICOMQRMove(
            "127.0.0.1",
            dimse.port,
            aec=dimse.ae_title,
            store_aet=DEMO_STORE_AET,
            store_port=store_port,
        )
    if protocol == "wado-uri":
        return WadoURI(session, emulator.wado_uri_url)
    if protocol == "rad69":
        return Rad69(
            session, emulator.rad69_url, transfer_syntax_list=RAD69_TRANSFER_SYNTAXES
        )
    return WadoRS(session, emulator.dicomweb_url)


@click.command("demo")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="DICOM folder to serve (default: demo studies, generated once into the "
    "cache folder).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dicomtrolley-demo"),
    show_default=True,
    help="Where the downloads go (one folder per protocol).",
)
@click.option(
    "--protocol",
    "protocols",
    type=click.Choice(PROTOCOLS),
    multiple=True,
    help="Download protocol (repeatable; default: all).",
)
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--progress/--no-progress",
    "show_progress",
    default=None,
    help="Progress bars (default: on a terminal only).",
)
def demo(
    data: Path | None,
    output: Path,
    protocols: tuple[str, ...],
    workers: int,
    show_progress: bool | None,
) -> None:
    """Find and download studies from the built-in emulator PACS, end to end."""
    console = Console()
    folder = data if data else ensure_demo_data(default_data_dir(), console)
    store_port = _free_port()
    services = [
        *default_services(),
        DimseService(move_destinations={DEMO_STORE_AET: ("127.0.0.1", store_port)}),
    ]
    with Emulator(folder, users=dict([DEMO_USER]), services=services) as emulator:
        console.print(
            Panel.fit(
                f"Emulator PACS (Vitrea-style) at [bold]{emulator.base_url}[/]\n"
                f"login {emulator.login_url} as {DEMO_USER[0]}/{DEMO_USER[1]}\n"
                f"MINT {emulator.mint_url}\nWADO-URI {emulator.wado_uri_url}\n"
                f"DICOMweb {emulator.dicomweb_url}\nRAD-69 {emulator.rad69_url}\n"
                f"DIMSE {emulator.dimse.ae_title}@127.0.0.1:{emulator.dimse.port}\n"
                f"serving {folder}",
                title="dicomtrolley demo",
            )
        )
        session = create_session(emulator.login_url, *DEMO_USER)
        mint = Mint(session, emulator.mint_url)
        studies = _search(mint, console)
        total = sum(len(study.all_instances()) for study in studies)
        failed = False
        for protocol in protocols or PROTOCOLS:
            target = output / protocol
            trolley = Trolley(
                searcher=mint,
                downloader=_downloader(protocol, session, emulator, store_port),
                storage=TemplateStorage(target, LAYOUT),
            )
            start = time.perf_counter()
            disable = None if show_progress is None else not show_progress
            with RichProgress(
                console=console, description=protocol.upper(), disable=disable
            ) as progress:
                try:
                    report = trolley.download(
                        studies,
                        target,
                        use_async=True,
                        max_workers=workers,
                        progress=progress,
                    )
                except DICOMTrolleyError as error:
                    console.print(f"[red]{protocol}: {error}")
                    failed = True
                    continue
            elapsed = time.perf_counter() - start
            console.print(
                f"{protocol.upper()}: "
                + summary(
                    len(report.saved),
                    len(report.skipped),
                    report.bytes_written,
                    elapsed,
                    target.resolve(),
                )
            )
            got = len(report.saved) + len(report.skipped)
            if got != total:
                console.print(f"[red]{protocol}: {got} of {total} instances on disk")
                failed = True
    if failed:
        raise click.exceptions.Exit(1)
    console.print(
        f"[green]Done.[/] {total} instances per protocol under "
        f"[bold]{output.resolve()}[/] (layout {LAYOUT})."
    )


def _text(value: object) -> str:
    """A DICOM value as text; several values joined by a backslash."""
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return str(value)
    return "\\".join(str(item) for item in value)


def study_table(studies: Sequence[Study], counts: dict[str, tuple[int, int]]) -> Table:
    """One row per study: patient, date, modalities, description and counts."""
    table = Table(title="Studies (MINT, STUDY level)", box=box.SIMPLE_HEAD)
    for name in ("Patient ID", "Patient name", "Date", "Modalities", "Description"):
        table.add_column(name, overflow="fold")
    table.add_column("Series", justify="right")
    table.add_column("Instances", justify="right")
    for study in studies:
        data = study.data
        series, instances = counts.get(study.uid, (0, 0))
        table.add_row(
            str(data.get("PatientID", "")),
            str(data.get("PatientName", "")),
            str(data.get("StudyDate", "")),
            _text(data.get("ModalitiesInStudy", "")),
            str(data.get("StudyDescription", "")),
            str(series),
            str(instances),
        )
    return table


def _search(mint: Mint, console: Console) -> list[Study]:
    """MINT searches at the three levels, shown as a table, a tree and counts."""
    console.rule("MINT search")
    studies = list(
        mint.find_studies(
            MintQuery(query_level=QueryLevels.STUDY, include_fields=STUDY_FIELDS)
        )
    )
    with_instances = [
        mint.find_study(
            MintQuery(StudyInstanceUID=study.uid, query_level=QueryLevels.INSTANCE)
        )
        for study in studies
    ]
    counts = {
        study.uid: (len(study.series), len(study.all_instances()))
        for study in with_instances
    }
    console.print(study_table(studies, counts))
    with_series = list(
        mint.find_studies(
            MintQuery(
                query_level=QueryLevels.SERIES,
                include_fields=STUDY_FIELDS + SERIES_FIELDS,
            )
        )
    )
    console.print(series_tree(with_series))
    total = sum(instances for _, instances in counts.values())
    console.print(
        f"INSTANCE level: {total} instances in {len(with_instances)} studies, "
        "ready to download."
    )
    return with_instances
