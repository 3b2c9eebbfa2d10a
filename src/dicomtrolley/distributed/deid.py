"""De-identification on the workers of a distributed batch, the key kept off the graph.

A :class:`~dicomtrolley.deid.Deidentifier` holds its key, so it never travels:
the client ships a :class:`DeidSettings` (the profile, a recipe's text, the
options, the edition of the Basic Profile table and two check values) with the
run's other settings, and each worker builds its own de-identifier with the
key read from its own environment (``key_env``: ``DICOMTROLLEY_DEID_KEY``, or
the profile's ``[deid] key_env``), as it reads a password.

Every worker must give what the client would: a worker without the key, with
another key, or whose table edition or recipe differs, refuses (a
:class:`DeidWorkerError`, which stops the run) and writes nothing. The client
checks the folder's ``deid.json`` (or creates it) before any task starts; the
worker checks it again before its first file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dicomtrolley.credentials import ConfigError

if TYPE_CHECKING:
    from dicomtrolley.deid import Deidentifier

__all__ = ["DeidSettings", "DeidWorkerError"]


class DeidWorkerError(ConfigError):
    """A worker cannot de-identify as the client does: no key in its
    environment, another key, another edition of the table or recipe. Every
    task of that worker would fail alike, so the run stops."""


@dataclass(frozen=True)
class DeidSettings:
    """What a worker needs to de-identify as the client would; no key inside.

    ``key_check`` and ``fingerprint`` are the client's
    (:meth:`~dicomtrolley.deid.Deidentifier.key_check`, which tells keys apart
    without revealing them, and the profile with the digest of its rules).
    """

    profile: str
    recipe_text: str | None
    retain_dates: bool
    retain_device: bool
    retain_uids: bool
    key_env: str
    edition: str
    key_check: str
    fingerprint: str

    @classmethod
    def of(cls, deidentifier: Deidentifier) -> DeidSettings:
        """The settings of the client's de-identifier (its key left out)."""
        from dicomtrolley.deid_table import EDITION

        options = deidentifier.options
        return cls(
            profile=deidentifier.profile,
            recipe_text=deidentifier.recipe_text,
            retain_dates=options.retain_dates,
            retain_device=options.retain_device,
            retain_uids=options.retain_uids,
            key_env=deidentifier.key_env,
            edition=EDITION,
            key_check=deidentifier.key_check(),
            fingerprint=deidentifier.fingerprint,
        )

    def open(self, worker: str) -> Deidentifier:
        """This worker's de-identifier, its key from ``$key_env``; its records
        go to shards named worker.

        Raises
        ------
        DeidWorkerError
            No key (or a short one) in this worker's environment, another key
            than the client's, another table edition or recipe, or no deid
            extra: named with the worker and the variable.
        """
        from dicomtrolley.deid import DeidentificationError, Deidentifier
        from dicomtrolley.deid_table import EDITION

        where = f"worker {worker}"
        if self.edition != EDITION:
            raise DeidWorkerError(
                f"{where} has the Basic Profile table of PS3.15 {EDITION}, the "
                f"client {self.edition}: install the same dicomtrolley everywhere"
            )
        try:
            found = Deidentifier(
                None,
                self.profile,
                retain_dates=self.retain_dates,
                retain_device=self.retain_device,
                retain_uids=self.retain_uids,
                key_env=self.key_env,
                recipe_text=self.recipe_text,
            )
        except DeidentificationError as error:
            raise DeidWorkerError(
                f"{where} cannot de-identify: {error.message} (in the "
                "environment of every worker)"
            ) from error
        if found.key_check() != self.key_check:
            raise DeidWorkerError(
                f"{where}: the key in its ${self.key_env} is not the client's: "
                "every worker needs the same key"
            )
        if found.fingerprint != self.fingerprint:
            raise DeidWorkerError(
                f"{where} de-identifies as {found.fingerprint!r}, the client as "
                f"{self.fingerprint!r}: install the same dicomtrolley everywhere"
            )
        found.records_shard = worker
        return found
