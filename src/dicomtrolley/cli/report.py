"""``dicomtrolley report DIR``: what an output folder holds and what failed.

Reads the folder's index (``.dicomtrolley/index.sqlite``: instances present
and intact) and its ``manifest.jsonl`` with the shards of Dask workers
(``manifest.d/*.jsonl``), merged by time: every outcome of every download into
it; see :func:`dicomtrolley.manifest.summarize`. A de-identified folder's
records (mapping and flags, with the shards of Dask workers) are counted too:
:func:`dicomtrolley.deid_records.deid_summary`. ``--json`` prints the same
as one JSON object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.filesize import decimal

from dicomtrolley.deid_records import deid_summary
from dicomtrolley.manifest import FolderSummary, summarize


@click.command("report")
@click.argument(
    "folder",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def report(folder: Path, as_json: bool) -> None:
    """Summarise an output folder: studies, instances, bytes, failures.

    \b
    Examples:
      dicomtrolley report out
      dicomtrolley report out --json | jq .failures

    Exit status: 0, or 1 when failures are still open (not fetched since).
    """
    summary = summarize(folder)
    deid = deid_summary(folder)
    if as_json:
        found = summary.as_dict() | ({"deid": deid} if deid else {})
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
    else:
        click.echo(text(summary, deid))
    if summary.failures:
        click.get_current_context().exit(1)


def text(summary: FolderSummary, deid: dict[str, Any] | None = None) -> str:
    """The summary (and a de-identified folder's records) as a few lines of text."""
    lines = [
        f"{summary.folder}",
        f"  on disk: {summary.instances} instance(s) of {summary.studies} "
        f"study(ies), {decimal(summary.bytes_on_disk)}",
        f"  {summary.runs} download run(s): {summary.saved} saved "
        f"({decimal(summary.bytes_saved)}), {summary.skipped} skipped (already "
        f"there), {summary.failed} failed",
    ]
    if deid:
        lines.append(
            f"  de-identified ({deid['profile']}): {deid['patients']} patient(s), "
            f"{deid['uids']} UID(s) mapped; {deid['flagged']} instance(s) whose "
            "pixels may show patient data (.dicomtrolley/deid-flags.jsonl)"
        )
    if summary.failures:
        lines.append(f"  {len(summary.failures)} failure(s) not fetched since:")
        for failure in summary.failures:
            lines.append(f"    - {failure['error']}")
    return "\n".join(lines)
