"""C-MOVE (PS3.4 C.4.2): the PACS sends instances to a storage SCP of ours.

The :class:`~dicomtrolley.dimse.storage_scp.StoreSCP` receives them on the
associations the PACS opens to it; the Move Originator Message ID in its
C-STORE requests (PS3.7 9.1.1.1) tells which of our C-MOVE requests they
answer. Our own association carries only the request and its responses; while
the PACS is busy storing, its pending responses may be far apart, so the idle
timeout counts the storage SCP's activity as well (``Link.receive(heard=)``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from dicomtrolley.dimse.contexts import Proposal, proposal, qr_model
from dicomtrolley.dimse.errors import MOVE_DESTINATION_UNKNOWN
from dicomtrolley.dimse.link import Heard
from dicomtrolley.dimse.sessions import RetrieveSession
from dicomtrolley.dimse.storage_scp import StoreSCP
from dicomtrolley.formats import dimse_commands, dul

OPERATION = "C-MOVE"


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

    operation = OPERATION
    response_field = dul.C_MOVE_RSP

    def __init__(self, *args: Any, scp: StoreSCP, **kwargs: Any) -> None:
        super().__init__(
            *args,
            model_uid=qr_model(kwargs["model"], "move"),
            spool=scp.spool,
            **kwargs,
        )
        self.scp = scp

    def contexts(self) -> list[Proposal]:
        return [proposal(self.model_uid)]

    def command(self, msg_id: int) -> bytes:
        return dimse_commands.c_move_rq(msg_id, str(self.model_uid), self.scp.aet)

    def heard(self) -> Heard:
        return self.scp.last_heard

    def hint(self, status: int) -> str:
        address = self.scp.bind_address
        if address in ("0.0.0.0", "::") and self.link is not None:
            with contextlib.suppress(OSError):  # our address as the PACS sees it
                address = str(self.link.sock.getsockname()[0])
        return destination_hint(status, self.scp.aet, address, self.scp.port)
