"""C-MOVE (PS3.4 C.4.2): the PACS sends instances to a storage SCP of ours.

The :class:`~dicomtrolley.dimse.storage_scp.StoreSCP` receives them on another
association that the PACS opens; the Move Originator Message ID in its C-STORE
requests (PS3.7 9.1.1.1) tells which of our C-MOVE requests they answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pynetdicom import build_context
from pynetdicom.association import Association

from dicomtrolley.dimse.associations import (
    open_association,
    release,
    require_context,
)
from dicomtrolley.dimse.contexts import UNCOMPRESSED, qr_model
from dicomtrolley.dimse.errors import MOVE_DESTINATION_UNKNOWN, ServiceNotSupportedError
from dicomtrolley.dimse.retrieve import RetrieveUnit
from dicomtrolley.dimse.sessions import Responses, RetrieveSession
from dicomtrolley.dimse.storage_scp import StoreSCP


def destination_hint(code: int, store_aet: str, address: str, port: int) -> str:
    """What to do when the PACS may not know our move destination."""
    where = f"AE title {store_aet} at {address}:{port}"
    if code == MOVE_DESTINATION_UNKNOWN:
        return (
            f"The PACS does not know the move destination: register {where} on the "
            "PACS (Orthanc: DicomModalities), or use the store AE title and port it "
            "knows"
        )
    return (
        f"If the PACS does not know the move destination {store_aet}, register "
        f"{where} on the PACS (Orthanc: DicomModalities)"
    )


class MoveSession(RetrieveSession):
    """C-MOVE requests over one association, to scp (see RetrieveSession)."""

    operation = "C-MOVE"

    def __init__(self, *args: Any, scp: StoreSCP, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scp = scp
        self.model_uid = qr_model(self.model, "move")

    def open(self) -> Association:
        assoc = open_association(
            self.peer,
            [build_context(self.model_uid, list(UNCOMPRESSED))],
            operation=self.operation,
            timeouts=self.timeouts,
            fast_poll=False,  # the instances come over the SCP's associations
        )
        try:
            require_context(
                assoc.accepted_contexts, self.model_uid, self.peer, self.operation
            )
        except ServiceNotSupportedError:
            release(assoc)
            raise
        return assoc

    def send(self, assoc: Association, unit: RetrieveUnit, msg_id: int) -> Responses:
        identifier = unit.identifier(patient_root=self.model == "patient")
        return assoc.send_c_move(
            identifier, self.scp.aet, self.model_uid, msg_id=msg_id
        )

    def alive(self) -> list[Callable[[], bool]]:
        return [self.receiver.busy, self.scp.active]

    def hint(self, status: int, assoc: Association) -> str:
        address = str(assoc.requestor.address or self.scp.bind_address)
        return destination_hint(status, self.scp.aet, address, self.scp.port)
