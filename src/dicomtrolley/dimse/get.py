"""C-GET (PS3.4 C.4.3): instances come back over the same association.

The association proposes the GET model plus storage contexts with the SCP role
(:mod:`~dicomtrolley.dimse.contexts`); every instance arrives as a C-STORE
request on it, which a :class:`~dicomtrolley.dimse.incoming.StoreIntake` writes
to a temporary file in the spool folder, hands to the receiver and answers,
all from the worker's own thread (:class:`~dicomtrolley.dimse.sessions.
RetrieveSession` does the request and its responses).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dicomtrolley.dimse.contexts import (
    MAX_CONTEXTS,
    Proposal,
    proposal,
    qr_model,
    scp_roles,
    storage_contexts,
)
from dicomtrolley.dimse.errors import ServiceNotSupportedError
from dicomtrolley.dimse.incoming import StoreIntake
from dicomtrolley.dimse.link import Link
from dicomtrolley.dimse.retrieve import STATUS_OUT_OF_RESOURCES, Tally
from dicomtrolley.dimse.sessions import RetrieveSession
from dicomtrolley.dimse.settings import Peer
from dicomtrolley.formats import dimse_commands, dul
from dicomtrolley.formats.association import RoleSelection
from dicomtrolley.formats.negotiation import AcceptedContext

OPERATION = "C-GET"


def get_contexts(model: str, sop_classes: Sequence[str]) -> list[Proposal]:
    """The GET model context, then storage contexts for sop_classes (<= 128)."""
    model_context = proposal(qr_model(model, "get"))
    return [model_context, *storage_contexts(sop_classes, MAX_CONTEXTS - 1)]


def require_scp_role(contexts: Sequence[AcceptedContext], peer: Peer) -> None:
    """Raise ServiceNotSupportedError when no storage context came with our SCP role."""
    if not any(cx.as_scp for cx in contexts):
        raise ServiceNotSupportedError(
            "the peer accepted no storage context with the SCP role for us, so it "
            "cannot send instances over a C-GET association (try C-MOVE)",
            peer=peer,
            operation=OPERATION,
        )


class GetSession(RetrieveSession):
    """C-GET requests over one association, opened when first needed.

    ``contexts``: what to propose (:func:`get_contexts`); ``spool``: where
    instances are written as they arrive (default: the system temporary folder).
    """

    operation = OPERATION
    response_field = dul.C_GET_RSP

    def __init__(
        self,
        *args: Any,
        contexts: Sequence[Proposal],
        spool: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            *args,
            model_uid=qr_model(kwargs["model"], "get"),
            spool=spool or Path(tempfile.gettempdir()),
            **kwargs,
        )
        self.proposed = list(contexts)

    def contexts(self) -> list[Proposal]:
        return self.proposed

    def command(self, msg_id: int) -> bytes:
        return dimse_commands.c_get_rq(msg_id, str(self.model_uid))

    def roles(self) -> list[RoleSelection]:
        return scp_roles(self.proposed[1:])

    def check(self, link: Link) -> None:
        require_scp_role(list(link.contexts.values()), self.peer)

    def intake(self, link: Link, tally: Tally) -> StoreIntake:
        assert self.spool is not None
        return StoreIntake(link, self.receiver, self.spool, lambda command: tally)


__all__ = [
    "STATUS_OUT_OF_RESOURCES",
    "GetSession",
    "get_contexts",
    "require_scp_role",
]
