"""C-GET (PS3.4 C.4.3): instances come back over the same association.

The association proposes the GET model plus storage contexts with the SCP role
(:mod:`~dicomtrolley.dimse.contexts`); every instance arrives as a C-STORE
request that the :class:`~dicomtrolley.dimse.retrieve.Receiver` saves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from dicomtrolley.dimse.associations import open_association, require_context
from dicomtrolley.dimse.contexts import (
    MAX_CONTEXTS,
    UNCOMPRESSED,
    qr_model,
    scp_roles,
    storage_contexts,
)
from dicomtrolley.dimse.errors import ServiceNotSupportedError
from dicomtrolley.dimse.retrieve import STATUS_OUT_OF_RESOURCES, RetrieveUnit
from dicomtrolley.dimse.sessions import Responses, RetrieveSession
from dicomtrolley.dimse.settings import Peer


def get_contexts(model: str, sop_classes: Sequence[str]) -> list[PresentationContext]:
    """The GET model context, then storage contexts for sop_classes (<= 128)."""
    model_context = build_context(qr_model(model, "get"), list(UNCOMPRESSED))
    return [model_context, *storage_contexts(sop_classes, MAX_CONTEXTS - 1)]


def require_scp_role(assoc: Association, peer: Peer) -> None:
    """Raise ServiceNotSupportedError when no storage context came with our SCP role."""
    if not any(cx.as_scp for cx in assoc.accepted_contexts):
        raise ServiceNotSupportedError(
            "the peer accepted no storage context with the SCP role for us, so it "
            "cannot send instances over a C-GET association (try C-MOVE)",
            peer=peer,
            operation="C-GET",
        )


class GetSession(RetrieveSession):
    """C-GET requests over one association (see RetrieveSession)."""

    operation = "C-GET"

    def __init__(
        self, *args: Any, contexts: Sequence[PresentationContext], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.contexts = list(contexts)
        self.model_uid = qr_model(self.model, "get")

    def _on_store(self, event: Any) -> int:
        tally = self.current
        if tally is None:  # a C-STORE outside of any request of ours
            return STATUS_OUT_OF_RESOURCES
        return self.receiver.handle(event, tally)

    def open(self) -> Association:
        storage = self.contexts[1:]
        assoc = open_association(
            self.peer,
            self.contexts,
            operation=self.operation,
            timeouts=self.timeouts,
            ext_neg=scp_roles(storage),
            handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        try:
            require_context(assoc, self.model_uid, self.peer, self.operation)
            require_scp_role(assoc, self.peer)
        except ServiceNotSupportedError:
            assoc.release()
            raise
        return assoc

    def send(self, assoc: Association, unit: RetrieveUnit, msg_id: int) -> Responses:
        identifier = unit.identifier(patient_root=self.model == "patient")
        return assoc.send_c_get(identifier, self.model_uid, msg_id=msg_id)
