"""``dicomtrolley demo-data DIR``: write the synthetic demo studies to a folder.

The same as, in a script::

    from dicomtrolley.synthetic import write_studies
    write_studies(Path("DIR"))

Writes 5 studies of 4 patients (105 instances: CT and MR, several transfer
syntaxes, a multi-frame instance, non-ASCII names) as
``DIR/<PatientID>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm`` and prints what it wrote.
The files are the same every time; existing ones are replaced.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from dicomtrolley.synthetic import StudySpec, default_studies, write_studies


def summary_table(studies: list[StudySpec]) -> Table:
    """One row per study: patient, date, description, series and instances."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("Patient", no_wrap=True)
    table.add_column("Name", min_width=13, overflow="fold")
    table.add_column("Date", no_wrap=True)
    table.add_column("Study", min_width=8)
    table.add_column("Modality", no_wrap=True)
    table.add_column("Series", justify="right", no_wrap=True)
    table.add_column("Instances", justify="right", no_wrap=True)
    for study in studies:
        table.add_row(
            study.patient_id,
            study.patient_name,
            f"{study.study_date[:4]}-{study.study_date[4:6]}-{study.study_date[6:]}",
            study.description,
            ", ".join(study.modalities),
            str(len(study.series)),
            str(study.instance_count),
        )
    return table


@click.command("demo-data")
@click.argument(
    "directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path)
)
def demo_data(directory: Path) -> None:
    """Write synthetic demo studies to DIR (created if needed).

    \b
    Then serve them:
      dicomtrolley serve --data DIR
    """
    studies = default_studies()
    paths = write_studies(directory, studies)
    size = sum(path.stat().st_size for path in paths)
    console = Console(highlight=False, soft_wrap=True)
    console.print(summary_table(studies))
    patients = len({study.patient_id for study in studies})
    series = sum(len(study.series) for study in studies)
    console.print(
        f"Wrote {len(paths)} instances ({decimal(size)}) of {patients} patients, "
        f"{len(studies)} studies, {series} series to {directory}"
    )
    console.print(f"Serve them: dicomtrolley serve --data {directory}")
