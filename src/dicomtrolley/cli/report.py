"""``dicomtrolley report DIR``: what an output folder holds and what failed.

Reads the folder's index (``.dicomtrolley/index.sqlite``: instances present
and intact) and its ``manifest.jsonl`` with the shards of Dask workers
(``manifest.d/*.jsonl``), merged by time: every outcome of every download into
it; see :func:`dicomtrolley.manifest.summarize`. ``--json`` prints the same
as one JSON object.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.filesize import decimal

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
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(text(summary))
    if summary.failures:
        click.get_current_context().exit(1)


def text(summary: FolderSummary) -> str:
    """The summary as a few lines of text."""
    lines = [
        f"{summary.folder}",
        f"  on disk: {summary.instances} instance(s) of {summary.studies} "
        f"study(ies), {decimal(summary.bytes_on_disk)}",
        f"  {summary.runs} download run(s): {summary.saved} saved "
        f"({decimal(summary.bytes_saved)}), {summary.skipped} skipped (already "
        f"there), {summary.failed} failed",
    ]
    if summary.failures:
        lines.append(f"  {len(summary.failures)} failure(s) not fetched since:")
        for failure in summary.failures:
            lines.append(f"    - {failure['error']}")
    return "\n".join(lines)
