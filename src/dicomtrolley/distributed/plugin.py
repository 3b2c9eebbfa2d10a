"""The worker plugin that gives every worker of the cluster a run's settings.

Registered with the scheduler for the length of a run: each worker gets the
settings once, also a worker that joins (or is restarted after dying) during
the run, and the tasks carry only the run's id. Tasks that took the settings
as an input would be sent to the worker that holds them (Dask runs a task
where its inputs are), which is one worker. Imported only with Dask present.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from dicomtrolley.distributed.worker import RunSettings, close_run, register_run


class RunPlugin(WorkerPlugin):
    """Settings of one run on every worker; closed on the workers at the end."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.name = f"dicomtrolley-run-{settings.run}"

    def setup(self, worker: Any) -> None:
        register_run(self.settings)

    def teardown(self, worker: Any) -> None:
        close_run(self.settings.run)
