"""The protocol trace that ``DICOMQR(debug=True)`` turns on: associations and
DIMSE messages, logged by ``trolley.dimse`` at DEBUG.

What goes in: PDU types, AE titles, the presentation contexts proposed and
negotiated (abstract and transfer syntax, roles), the peer's maximum PDU
length, and per DIMSE message its command field, presentation context, message
IDs, status, sub-operation counts and the size of its data set. What stays out:
data set contents (identifiers and instances hold patient data) and the user
identity item (credentials).

A :class:`~dicomtrolley.dimse.link.Link` looks at :func:`enabled` once, when
it is made; with tracing off the cost is one attribute test per message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dicomtrolley.formats import dul
from dicomtrolley.formats.association import (
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
)
from dicomtrolley.formats.dimse_commands import COMMAND_NAMES
from dicomtrolley.logs import get_module_logger

if TYPE_CHECKING:
    from dicomtrolley.dimse.settings import Peer
    from dicomtrolley.formats.negotiation import AcceptedContext, RefusedContext

logger = get_module_logger("dimse")

PDU_NAMES = {
    dul.A_ASSOCIATE_RQ: "A-ASSOCIATE-RQ",
    dul.A_ASSOCIATE_AC: "A-ASSOCIATE-AC",
    dul.A_ASSOCIATE_RJ: "A-ASSOCIATE-RJ",
    dul.P_DATA_TF: "P-DATA-TF",
    dul.A_RELEASE_RQ: "A-RELEASE-RQ",
    dul.A_RELEASE_RP: "A-RELEASE-RP",
    dul.A_ABORT: "A-ABORT",
}
_NUMBERS = (
    (dul.MESSAGE_ID, "message"),
    (dul.MESSAGE_ID_BEING_RESPONDED_TO, "answers message"),
    (dul.MOVE_ORIGINATOR_MESSAGE_ID, "for C-MOVE message"),
    (dul.REMAINING, "remaining"),
    (dul.COMPLETED, "completed"),
    (dul.FAILED, "failed"),
    (dul.WARNING, "warning"),
)


def enabled() -> bool:
    return logger.isEnabledFor(logging.DEBUG)


def enable() -> None:
    """Log the trace at DEBUG; to stderr when the application set up no
    logging at all (as ``debug=True`` did in dicomtrolley 4.1.0)."""
    logger.setLevel(logging.DEBUG)
    if not logger.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)


def _towards(direction: str) -> str:
    """'sent to' or 'received from'."""
    return f"{direction} {'to' if direction == 'sent' else 'from'}"


def pdu(direction: str, peer: Peer, pdu_type: int) -> None:
    """A PDU other than P-DATA-TF and the A-ASSOCIATEs (release, abort)."""
    name = PDU_NAMES.get(pdu_type, f"PDU type 0x{pdu_type:02X}")
    logger.debug("%s %s %s", name, _towards(direction), peer)


def request(peer: Peer, rq: AssociateRQ) -> None:
    info = rq.user_information
    logger.debug(
        "A-ASSOCIATE-RQ sent to %s: %d presentation contexts, maximum PDU %s, "
        "roles for %d SOP classes, %d extended negotiation items",
        peer,
        len(rq.presentation_contexts),
        info.maximum_length,
        len(info.roles),
        len(info.extended_negotiation),
    )
    for context in rq.presentation_contexts:
        logger.debug(
            "  proposed context %d: %s in %s",
            context.context_id,
            context.abstract_syntax,
            ", ".join(context.transfer_syntaxes),
        )


def received_request(peer: Peer, rq: AssociateRQ) -> None:
    logger.debug(
        "A-ASSOCIATE-RQ received from %s (called %r, calling %r): %d "
        "presentation contexts, maximum PDU %s",
        peer,
        rq.called_ae_title,
        rq.calling_ae_title,
        len(rq.presentation_contexts),
        rq.user_information.maximum_length,
    )


def accepted(
    direction: str,
    peer: Peer,
    answer: AssociateAC,
    contexts: Mapping[int, AcceptedContext],
    refused: tuple[RefusedContext, ...],
) -> None:
    """An A-ASSOCIATE-AC and what it let us use."""
    info = answer.user_information
    logger.debug(
        "A-ASSOCIATE-AC %s %s: %d contexts accepted, %d refused, maximum PDU %s, "
        "implementation %s %s",
        _towards(direction),
        peer,
        len(contexts),
        len(refused),
        info.maximum_length,
        info.implementation_class_uid,
        info.implementation_version_name or "",
    )
    for context in contexts.values():
        roles = "/".join(
            role
            for role, held in (("SCU", context.as_scu), ("SCP", context.as_scp))
            if held
        )
        logger.debug(
            "  context %d: %s in %s, we are %s",
            context.context_id,
            context.abstract_syntax,
            context.transfer_syntax,
            roles,
        )
    for refusal in refused:
        logger.debug("  refused %s", refusal.describe())


def rejected(direction: str, peer: Peer, rejection: AssociateRJ) -> None:
    logger.debug(
        "A-ASSOCIATE-RJ %s %s: %s", _towards(direction), peer, rejection.describe()
    )


def message(
    direction: str,
    peer: Peer,
    context_id: int,
    command: Mapping[int, dul.CommandValue],
    data_bytes: int | None,
) -> None:
    """One DIMSE message: its command and the size of its data set, if any."""
    field = dul.command_int(command, dul.COMMAND_FIELD)
    parts = [COMMAND_NAMES.get(field, f"command 0x{field:04X}")]
    parts.append(f"context {context_id}")
    parts += [
        f"{label} {dul.command_int(command, tag)}"
        for tag, label in _NUMBERS
        if tag in command
    ]
    if dul.STATUS in command:
        parts.append(f"status 0x{dul.command_int(command, dul.STATUS):04X}")
    if data_bytes is not None:
        parts.append(f"data set of {data_bytes} bytes")
    logger.debug("%s %s %s", ", ".join(parts), _towards(direction), peer)


class Incoming:
    """Puts received commands back together for the trace (only when tracing:
    the operations assemble their own)."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.command = bytearray()
        self.pending: tuple[int, dict[int, dul.CommandValue]] | None = None
        self.data_bytes = 0

    def events(self, events: list[dul.Event]) -> None:
        for event in events:
            if isinstance(event, dul.PDU):
                pdu("received", self.peer, event.type)
            elif event.command:
                self._command(event)
            else:
                self._data(event)

    def _command(self, fragment: dul.Fragment) -> None:
        self.command += fragment.data
        if not fragment.last:
            return
        try:
            command = dul.decode_command(self.command)
        except dul.DULProtocolError:
            logger.debug("received an undecodable command from %s", self.peer)
            return
        finally:
            self.command = bytearray()
        if dul.has_dataset(command):
            self.pending, self.data_bytes = (fragment.context_id, command), 0
        else:
            message("received", self.peer, fragment.context_id, command, None)

    def _data(self, fragment: dul.Fragment) -> None:
        self.data_bytes += len(fragment.data)
        if fragment.last and self.pending is not None:
            context_id, command = self.pending
            message("received", self.peer, context_id, command, self.data_bytes)
            self.pending = None
