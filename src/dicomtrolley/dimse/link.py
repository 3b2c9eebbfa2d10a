"""An association driven from the calling thread: our requestor side for C-GET
and C-MOVE, and the acceptor side of the C-MOVE storage SCP.

pynetdicom runs each association on a reactor thread that polls the socket,
passes every PDU through its state machine and hands DIMSE messages to the
caller's thread through queues. For a retrieve that is a thread hand-over in
each direction for every instance, plus about 50 microseconds of Python per
PDU: a C-GET of the 105-instance demo set took 3.3 times as long as DCMTK's
``getscu``, and a 300 MB study 1.6 to 1.9 times (benchmarks/dimse.py).

A :class:`Link` does the same work synchronously, like ``getscu``: the caller's
thread reads the socket in large blocks, cuts the bytes into PDUs with the
sans-I/O :class:`~dicomtrolley.formats.dul.PDUReader`, and writes answers
straight back. pynetdicom still does the parts where it is not in the way:
encoding the A-ASSOCIATE-RQ, decoding A-ASSOCIATE-AC/RJ, and the presentation
context and role negotiation (:func:`pynetdicom.presentation.negotiate_as_requestor`).

Timeouts need no watchdog thread here: every wait on the socket is cut into
short slices, between which the total deadline, the idle time since the peer
last sent anything, and the caller's ``cancelled()`` are checked.

As acceptor (:meth:`Link.accept`, for the storage SCP that receives C-MOVE
sub-operations), the same loop runs once the A-ASSOCIATE-RQ is read, vetted
(called and calling AE title, the peer's address) and answered with an
A-ASSOCIATE-AC or -RJ (PS3.8 9.3.3, 9.3.4), all with our sans-I/O codec
(:mod:`~dicomtrolley.formats.association`, :mod:`~dicomtrolley.formats.
negotiation`).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    SOPClassExtendedNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_requestor

from dicomtrolley.dimse import tls
from dicomtrolley.dimse.errors import (
    AssociationAbortedError,
    AssociationBusyError,
    AssociationRejectedError,
    DIMSEConnectionError,
    DIMSEError,
    DIMSETimeoutError,
    ServiceNotSupportedError,
)
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer, check_ae_title
from dicomtrolley.formats import dul, negotiation
from dicomtrolley.formats.association import AssociateRJ, AssociateRQ
from dicomtrolley.formats.part10 import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
)
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("dimse")

#: PS3.7 A.2.1: the DICOM application context.
APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
#: The largest PDU we announce we can receive (DCMTK's own maximum).
MAXIMUM_PDU_SIZE = 131072
#: The most bytes asked of the socket at once.
READ_BLOCK = 262144
#: Longest single wait on the socket (seconds) between checks of the deadlines.
SLICE = 0.2
#: Seconds to wait for the answer to our A-RELEASE-RQ before aborting.
RELEASE_TIMEOUT = 5.0

Cancelled = Callable[[], bool]
#: time.monotonic() of the last sign of life elsewhere (the C-MOVE storage SCP)
Heard = Callable[[], float]


def _never() -> bool:
    return False


class Link:
    """An established association with peer (see :meth:`open`).

    Attributes
    ----------
    contexts:
        The accepted presentation contexts by context ID, each with its one
        transfer syntax and our roles (``as_scp`` for storage contexts).
    peer_max_pdu:
        The peer's Maximum Length Received (0: no limit).
    extended:
        The peer's answers to our SOP class extended negotiation (PS3.7
        D.3.3.5): service class application information by SOP class UID.
    """

    def __init__(
        self,
        sock: socket.socket,
        peer: Peer,
        timeouts: DIMSETimeouts,
        contexts: dict[int, PresentationContext],
        peer_max_pdu: int,
        operation: str,
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.timeouts = timeouts
        self.contexts = contexts
        self.peer_max_pdu = peer_max_pdu
        self.operation = operation
        self.reader = dul.PDUReader()
        self.open = True
        self.extended: dict[str, bytes] = {}
        self._slice = min(SLICE, timeouts.idle)
        sock.settimeout(self._slice)

    # -- opening ---------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        peer: Peer,
        contexts: Sequence[PresentationContext],
        *,
        operation: str,
        timeouts: DIMSETimeouts,
        roles: Sequence[SCP_SCU_RoleSelectionNegotiation] = (),
        extended: Sequence[SOPClassExtendedNegotiation] = (),
    ) -> Link:
        """Open a TCP connection to peer and negotiate an association.

        ``extended``: SOP class extended negotiation items to propose (such as
        relational queries, PS3.4 C.5.1); the answers are in :attr:`extended`.

        Raises
        ------
        DIMSEConnectionError
            No TCP connection (refused, unreachable, unknown host).
        DIMSETimeoutError
            No connection, or no answer to the association request, within
            ``timeouts.connect``.
        AssociationRejectedError, AssociationBusyError
            The peer rejected the association (with its reason).
        ServiceNotSupportedError
            The peer accepted none of the presentation contexts.
        AssociationAbortedError
            The peer aborted or closed the connection during negotiation.
        """
        proposed = _numbered(contexts, roles)
        sock = _connect(peer, timeouts, operation)
        try:
            sock.settimeout(timeouts.connect)
            sock.sendall(_associate_rq(peer, proposed, [*roles, *extended]))
            answer = _read_association_answer(sock, peer, timeouts, operation)
            accepted, peer_max = _accepted(answer, proposed, peer, operation)
            answers = _extended_answers(answer) if extended else {}
        except BaseException:
            with contextlib.suppress(OSError):
                sock.sendall(dul.abort())
            sock.close()
            raise
        logger.debug(
            "association with %s accepted: %d of %d contexts, peer's maximum PDU %d",
            peer,
            len(accepted),
            len(proposed),
            peer_max,
        )
        link = cls(sock, peer, timeouts, accepted, peer_max, operation)
        link.extended = answers
        return link

    @classmethod
    def accept(
        cls,
        sock: socket.socket,
        address: tuple[Any, ...],
        *,
        aet: str,
        vet: Vet,
        negotiate: Negotiate,
        operation: str,
        timeouts: DIMSETimeouts,
    ) -> Link:
        """Take an association request on sock, a connection accepted from address.

        ``vet`` looks at the request and the peer's address and says why it is
        refused (None: accepted); ``negotiate`` answers each proposed
        presentation context (see :func:`~dicomtrolley.dimse.contexts.
        accept_storage`). The returned link's ``peer`` is the requestor: its
        address, ``aet`` ours, ``aec`` its calling AE title.

        Raises
        ------
        AssociationRejectedError
            The request was refused (``vet``, or a wrong called AE title); the
            A-ASSOCIATE-RJ was sent.
        DIMSETimeoutError
            No association request within ``timeouts.connect``.
        AssociationAbortedError
            The peer closed the connection or sent something else.
        """
        host, port = str(address[0]), int(address[1])
        unknown = Peer(host, port, aet, "?")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.settimeout(timeouts.connect)
            raw = _read_association_answer(
                sock, unknown, timeouts, operation, _REQUESTS
            )
            if raw.type == dul.A_ABORT:
                raise _aborted_during_negotiation(unknown, operation, "A-ABORT")
            request = decode_associate_rq(raw.raw, unknown, operation)
            refusal = _vet_titles(request, aet) or vet(request, host)
            if refusal is not None:
                rejection = AssociateRJ(refusal.result, refusal.source, refusal.reason)
                sock.sendall(rejection.encode())
                raise AssociationRejectedError(
                    f"association from {request.calling_ae_title!r} refused: "
                    f"{refusal.why}",
                    peer=unknown,
                    operation=operation,
                )
            answer = negotiate(request)
            sock.sendall(
                negotiation.accept(
                    request,
                    answer,
                    maximum_length=MAXIMUM_PDU_SIZE,
                    implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                    implementation_version_name=IMPLEMENTATION_VERSION_NAME,
                ).encode()
            )
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise
        peer = Peer(host, port, aet, request.calling_ae_title)
        accepted = {cid: _context(cx) for cid, cx in answer.accepted.items()}
        peer_max = request.user_information.maximum_length or 0
        logger.debug(
            "association from %s accepted: %d of %d contexts, peer's maximum PDU %d",
            peer,
            len(accepted),
            len(answer.results),
            peer_max,
        )
        return cls(sock, peer, timeouts, accepted, peer_max, operation)

    # -- using -----------------------------------------------------------------

    def context_for(self, abstract_syntax: str) -> PresentationContext | None:
        """The first accepted context for abstract_syntax."""
        for context in self.contexts.values():
            if context.abstract_syntax == abstract_syntax:
                return context
        return None

    def send(self, context_id: int, command: bytes, dataset: bytes | None) -> None:
        """Send a DIMSE message: its command set, then its data set if any."""
        pieces = list(
            dul.p_data(context_id, command, command=True, max_length=self.peer_max_pdu)
        )
        if dataset is not None:
            pieces += dul.p_data(
                context_id, dataset, command=False, max_length=self.peer_max_pdu
            )
        self._sendall(b"".join(pieces))

    def _sendall(self, data: bytes) -> None:
        try:
            self.sock.settimeout(self.timeouts.idle)
            self.sock.sendall(data)
            self.sock.settimeout(self._slice)
        except TimeoutError as error:
            self.abort()
            raise DIMSETimeoutError(
                f"the peer took nothing for {self.timeouts.idle:g} s (idle timeout)",
                peer=self.peer,
                operation=self.operation,
            ) from error
        except OSError as error:
            self._lost()
            raise self._broken(f"connection lost while sending: {error}") from error

    def receive(
        self,
        deadline: float | None = None,
        cancelled: Cancelled = _never,
        heard: Heard | None = None,
    ) -> list[dul.Event]:
        """The next PDUs and P-DATA fragments from the peer.

        ``heard``: when the peer is busy elsewhere on our behalf (a C-MOVE's
        sub-operations arriving at the storage SCP), the time it was last heard
        of there; the idle timeout counts from the later of the two.

        Raises
        ------
        DIMSETimeoutError
            Nothing came for ``timeouts.idle`` seconds, or ``deadline``
            (``time.monotonic()``) passed; the association is aborted.
        AssociationAbortedError
            The connection broke, the peer closed it, sent something that is
            not DICOM, or ``cancelled()`` said the caller went away.
        """
        last_heard = time.monotonic()
        while True:
            if cancelled():
                self.abort()
                raise self._broken("aborted: cancelled by the caller")
            try:
                data = self.sock.recv(READ_BLOCK)
            except TimeoutError:
                now = time.monotonic()
                if heard is not None:
                    last_heard = max(last_heard, heard())
                if now - last_heard >= self.timeouts.idle:
                    self.abort()
                    raise DIMSETimeoutError(
                        f"the peer sent nothing for {self.timeouts.idle:g} s "
                        "(idle timeout)",
                        peer=self.peer,
                        operation=self.operation,
                    ) from None
                self._check_deadline(deadline)
                continue
            except OSError as error:
                self._lost()
                raise self._broken(f"connection lost: {error}") from error
            if not data:
                self._lost()
                raise self._broken("the peer closed the connection")
            self._check_deadline(deadline)
            try:
                events = self.reader.feed(data)
            except dul.DULProtocolError as error:
                self.abort()
                raise self._broken(f"protocol error: {error}") from error
            if events:
                return events
            last_heard = time.monotonic()

    def _check_deadline(self, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() > deadline:
            self.abort()
            raise DIMSETimeoutError(
                f"not finished within {self.timeouts.total or 0:g} s (total timeout)",
                peer=self.peer,
                operation=self.operation,
            )

    def unexpected(self, event: dul.Event) -> DIMSEError:
        """The error for a PDU that has no place in the operation (and abort)."""
        if isinstance(event, dul.PDU) and event.type == dul.A_ABORT:
            source, reason = dul.abort_reason(event)
            self._lost()
            return self._broken(
                f"the peer aborted the association (source {source}, reason {reason})"
            )
        if isinstance(event, dul.PDU) and event.type == dul.A_RELEASE_RQ:
            with contextlib.suppress(OSError):
                self.sock.sendall(dul.release_rp())
            self._lost()
            return self._broken("the peer released the association mid-operation")
        self.abort()
        if isinstance(event, dul.PDU):
            what = f"PDU type 0x{event.type:02X}"
        else:
            what = f"a fragment on presentation context {event.context_id}"
        return self._broken(f"protocol error: unexpected {what}")

    # -- closing ---------------------------------------------------------------

    def release(self, timeout: float | None = None) -> None:
        """Release the association; abort it when the peer does not answer
        within ``timeout`` seconds (default: RELEASE_TIMEOUT or the idle timeout)."""
        if not self.open:
            return
        if timeout is None:
            timeout = min(RELEASE_TIMEOUT, self.timeouts.idle)
        try:
            self._sendall(dul.release_rq())
            deadline = time.monotonic() + timeout
            while self.open:
                for event in self.receive(deadline):
                    if isinstance(event, dul.PDU) and event.type in (
                        dul.A_RELEASE_RP,
                        dul.A_ABORT,
                    ):
                        self._lost()
                        return
                    if isinstance(event, dul.PDU) and event.type == dul.A_RELEASE_RQ:
                        # release collision (PS3.8 7.2.2): we are the requestor
                        continue
        except DIMSEError:
            logger.debug("release of %s failed; aborted", self.peer, exc_info=True)
        finally:
            self._lost()

    def answer_release(self) -> None:
        """Answer the peer's A-RELEASE-RQ and close (an acceptor's normal end)."""
        with contextlib.suppress(OSError):
            self.sock.sendall(dul.release_rp())
        self._lost()

    def abort(self) -> None:
        """Send an A-ABORT (best effort) and close the connection."""
        if not self.open:
            return
        with contextlib.suppress(OSError):
            self.sock.settimeout(1.0)
            self.sock.sendall(dul.abort())
        self._lost()

    def _lost(self) -> None:
        self.open = False
        with contextlib.suppress(OSError):
            self.sock.close()

    def fail(self, message: str) -> AssociationAbortedError:
        """Abort the association; the error to raise for message."""
        self.abort()
        return self._broken(message)

    def _broken(self, message: str) -> AssociationAbortedError:
        return AssociationAbortedError(
            message, peer=self.peer, operation=self.operation
        )


# -- association negotiation ---------------------------------------------------


def _numbered(
    contexts: Sequence[PresentationContext],
    roles: Sequence[SCP_SCU_RoleSelectionNegotiation],
) -> list[PresentationContext]:
    """Copies of contexts with IDs 1, 3, 5 ... and our proposed roles set."""
    by_class = {str(r.sop_class_uid): (r.scu_role, r.scp_role) for r in roles}
    numbered = []
    for index, context in enumerate(contexts):
        copy = PresentationContext()
        copy.context_id = 2 * index + 1
        copy.abstract_syntax = context.abstract_syntax
        copy.transfer_syntax = list(context.transfer_syntax)
        proposed = by_class.get(str(context.abstract_syntax))
        if proposed is not None:
            copy.scu_role = bool(proposed[0])
            copy.scp_role = bool(proposed[1])
        numbered.append(copy)
    return numbered


def _associate_rq(
    peer: Peer,
    contexts: list[PresentationContext],
    roles: Sequence[SCP_SCU_RoleSelectionNegotiation | SOPClassExtendedNegotiation],
) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT_NAME
    primitive.calling_ae_title = peer.aet
    primitive.called_ae_title = peer.aec
    primitive.presentation_context_definition_list = contexts
    primitive.user_information = [*_user_information(), *roles]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _user_information() -> list[Any]:
    """Our maximum PDU length and implementation (PS3.7 D.3.3.1, D.3.3.2)."""
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = MAXIMUM_PDU_SIZE
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    return [maximum, implementation, version]


def _connect(peer: Peer, timeouts: DIMSETimeouts, operation: str) -> socket.socket:
    try:
        sock = socket.create_connection((peer.host, peer.port), timeouts.connect)
    except TimeoutError as error:
        raise DIMSETimeoutError(
            f"no TCP connection within {timeouts.connect:g} s",
            peer=peer,
            operation=operation,
        ) from error
    except OSError as error:
        raise DIMSEConnectionError(
            f"cannot connect: {error.strerror or error}", peer=peer, operation=operation
        ) from error
    with contextlib.suppress(OSError):
        # a DIMSE message is several small writes: no waiting for delayed ACKs
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if peer.tls is not None:  # DICOM over TLS (PS3.15 B): handshake in slices
        return tls.wrap_client(sock, peer, peer.tls, timeouts, operation)
    return sock


_ANSWERS = frozenset({dul.A_ASSOCIATE_AC, dul.A_ASSOCIATE_RJ, dul.A_ABORT})
_REQUESTS = frozenset({dul.A_ASSOCIATE_RQ, dul.A_ABORT})


def _read_association_answer(
    sock: socket.socket,
    peer: Peer,
    timeouts: DIMSETimeouts,
    operation: str,
    wanted: frozenset[int] = _ANSWERS,
) -> dul.PDU:
    reader = dul.PDUReader(max_length=1024 * 1024)
    deadline = time.monotonic() + timeouts.connect
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _no_answer(peer, timeouts, operation)
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError as error:
            raise _no_answer(peer, timeouts, operation) from error
        except OSError as error:
            raise _aborted_during_negotiation(peer, operation, str(error)) from error
        if not data:
            raise _aborted_during_negotiation(peer, operation, "connection closed")
        try:
            events = reader.feed(data)
        except dul.DULProtocolError as error:
            raise _aborted_during_negotiation(peer, operation, str(error)) from error
        for event in events:
            if isinstance(event, dul.PDU) and event.type in wanted:
                return event
            raise _aborted_during_negotiation(
                peer, operation, "unexpected answer to the association request"
            )


def _accepted(
    answer: dul.PDU,
    proposed: list[PresentationContext],
    peer: Peer,
    operation: str,
) -> tuple[dict[int, PresentationContext], int]:
    """The accepted contexts and the peer's maximum PDU length, or the error."""
    if answer.type == dul.A_ABORT:
        raise _aborted_during_negotiation(peer, operation, "A-ABORT")
    if answer.type == dul.A_ASSOCIATE_RJ:
        rejected = A_ASSOCIATE_RJ()
        try:
            rejected.decode(answer.raw)
        except Exception as error:  # pynetdicom raises assorted errors on garbage
            raise _aborted_during_negotiation(peer, operation, str(error)) from error
        raise rejection_error(rejected.to_primitive(), peer, operation)
    pdu = A_ASSOCIATE_AC()
    try:
        pdu.decode(answer.raw)
        primitive = pdu.to_primitive()
    except Exception as error:  # pynetdicom raises assorted errors on garbage
        raise _aborted_during_negotiation(peer, operation, str(error)) from error
    roles = {
        str(item.sop_class_uid): (item.scu_role, item.scp_role)
        for item in primitive.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    }
    negotiated = negotiate_as_requestor(
        proposed,
        primitive.presentation_context_definition_results_list,
        roles,  # type: ignore[arg-type]
    )
    accepted = {int(cx.context_id or 0): cx for cx in negotiated if cx.result == 0}
    if not accepted:
        names = dict.fromkeys(
            getattr(cx.abstract_syntax, "name", str(cx.abstract_syntax))
            for cx in negotiated
        )
        raise ServiceNotSupportedError(
            "the peer accepted none of the proposed presentation contexts "
            f"({', '.join(names)})",
            peer=peer,
            operation=operation,
        )
    return accepted, int(primitive.maximum_length_received or 0)


def _extended_answers(answer: dul.PDU) -> dict[str, bytes]:
    """The SOP class extended negotiation items of an A-ASSOCIATE-AC."""
    pdu = A_ASSOCIATE_AC()
    pdu.decode(answer.raw)  # decoded once already by _accepted
    return {
        str(item.sop_class_uid): bytes(
            item.service_class_application_information or b""
        )
        for item in pdu.to_primitive().user_information
        if isinstance(item, SOPClassExtendedNegotiation)
    }


def rejection_error(primitive: Any, peer: Peer, operation: str) -> DIMSEError:
    """The error for an A-ASSOCIATE-RJ (as a pynetdicom primitive)."""
    detail = _rejection(primitive)
    if getattr(primitive, "result", None) == 2:
        return AssociationBusyError(
            f"association rejected for now ({detail}); try again later",
            peer=peer,
            operation=operation,
        )
    return AssociationRejectedError(
        f"association rejected ({detail}). Check the AE titles: the PACS must "
        f"know the calling AE title {peer.aet!r} and answer to the called AE "
        f"title {peer.aec!r}",
        peer=peer,
        operation=operation,
    )


def _rejection(primitive: Any) -> str:
    parts = []
    for name in ("result_str", "source_str", "reason_str"):
        try:
            text = getattr(primitive, name)
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
        if text:
            parts.append(str(text).lower())
    return ", ".join(parts) or "no reason given"


def _no_answer(peer: Peer, timeouts: DIMSETimeouts, operation: str) -> DIMSEError:
    return DIMSETimeoutError(
        f"no answer to the association request within {timeouts.connect:g} s",
        peer=peer,
        operation=operation,
    )


def _aborted_during_negotiation(peer: Peer, operation: str, detail: str) -> DIMSEError:
    return AssociationAbortedError(
        "the peer aborted or closed the connection during association negotiation"
        f" ({detail})",
        peer=peer,
        operation=operation,
    )


# -- accepting associations --------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ to answer (PS3.8 9.3.4) and why, for the log.

    ``result`` 1: rejected-permanent, 2: rejected-transient. ``source`` 1:
    service user (``reason`` 1 none given, 2 application context name not
    supported, 3 calling AE title not recognized, 7 called AE title not
    recognized); 3: service provider, presentation (``reason`` 1 temporary
    congestion, 2 local limit exceeded).
    """

    result: int
    source: int
    reason: int
    why: str


Vet = Callable[[AssociateRQ, str], Rejection | None]
"""(request, peer address) -> why it is refused, or None to accept it."""
Negotiate = Callable[[AssociateRQ], negotiation.AcceptorNegotiation]
"""The answer to each proposed context (formats.negotiation.negotiate_as_acceptor)."""


def _vet_titles(request: AssociateRQ, aet: str) -> Rejection | None:
    """The checks every acceptor makes: application context, both AE titles."""
    if request.application_context_name != APPLICATION_CONTEXT_NAME:
        return Rejection(
            1, 1, 2, f"application context {request.application_context_name} unknown"
        )
    if request.called_ae_title != aet:
        return Rejection(
            1, 1, 7, f"called AE title {request.called_ae_title!r} not ours"
        )
    try:
        check_ae_title(request.calling_ae_title)
    except ValueError:
        return Rejection(
            1, 1, 3, f"calling AE title {request.calling_ae_title!r} invalid"
        )
    return None


def decode_associate_rq(raw: bytes, peer: Peer, operation: str) -> AssociateRQ:
    """The A-ASSOCIATE-RQ in raw, or the error that ends the connection."""
    try:
        return AssociateRQ.decode(raw)
    except dul.DULProtocolError as error:
        raise _aborted_during_negotiation(peer, operation, str(error)) from error


def _context(accepted: negotiation.AcceptedContext) -> PresentationContext:
    """An accepted context in the shape the requestor side holds (Link.contexts)."""
    context = PresentationContext()
    context.context_id = accepted.context_id
    context.abstract_syntax = accepted.abstract_syntax
    context.transfer_syntax = [accepted.transfer_syntax]
    return context
