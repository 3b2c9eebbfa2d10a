"""C-ECHO (PS3.7 9.1.5, Verification SOP class PS3.4 annex A): is the peer there
and does it accept us?

One association with the Verification context, one C-ECHO-RQ, its response,
release: the same :class:`~dicomtrolley.dimse.link.Link` and timeouts
(connect, idle, total) as every other DIMSE operation.
"""

from __future__ import annotations

import time

from dicomtrolley.dimse.contexts import proposal
from dicomtrolley.dimse.errors import ServiceNotSupportedError, status_error
from dicomtrolley.dimse.link import Link
from dicomtrolley.dimse.messages import MessageReader
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.formats import dimse_commands, dul

OPERATION = "C-ECHO"
VERIFICATION = dimse_commands.VERIFICATION_SOP_CLASS


def c_echo(peer: Peer, timeouts: DIMSETimeouts) -> None:
    """Associate with peer, send a C-ECHO and check that it answers Success.

    Raises
    ------
    DIMSEError
        The subclass that says what went wrong: no connection, rejected
        association, no Verification context, timeout, or a status other than
        Success (DIMSEStatusError, ``status`` holds it).
    """
    link = Link.connect(
        peer, [proposal(VERIFICATION)], operation=OPERATION, timeouts=timeouts
    )
    try:
        context = link.context_for(VERIFICATION)
        if context is None:
            raise ServiceNotSupportedError(
                "the peer does not accept the Verification SOP class",
                peer=peer,
                operation=OPERATION,
            )
        context_id = context.context_id
        deadline = time.monotonic() + timeouts.total if timeouts.total else None
        link.send(context_id, dimse_commands.c_echo_rq(1), None)
        response, _ = MessageReader(link, context_id, deadline).next()
        field = dul.command_int(response, dul.COMMAND_FIELD)
        if field != dul.C_ECHO_RSP or dul.STATUS not in response:
            raise link.fail(
                f"protocol error: answered a C-ECHO with command 0x{field:04X}"
            )
    except BaseException:
        link.abort()
        raise
    link.release()
    status = dul.command_int(response, dul.STATUS)
    if status != 0x0000:
        raise status_error(status, peer=peer, operation=OPERATION)
