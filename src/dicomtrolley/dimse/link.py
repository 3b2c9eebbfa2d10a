"""An association driven from the calling thread: our requestor side for C-GET
and C-MOVE, and the acceptor side of the C-MOVE storage SCP.

The DICOM network stack we used before ran each association on a reactor
thread that polled the socket, passed every PDU through its state machine and
handed DIMSE messages to the caller's thread through queues. For a retrieve
that is a thread hand-over in each direction for every instance, plus about 50
microseconds of Python per PDU: a C-GET of the 105-instance demo set took 3.3
times as long as DCMTK's ``getscu``, and a 300 MB study 1.6 to 1.9 times
(benchmarks/dimse.py).

A :class:`Link` does the same work synchronously, like ``getscu``: the caller's
thread reads the socket in large blocks (over TLS, the records already
received gathered into one block) straight into the buffer of the sans-I/O
:class:`~dicomtrolley.formats.dul.PDUReader`, which cuts them into PDUs and
fragments without copying (views of that buffer, valid until the next
:meth:`Link.receive`), and writes answers straight back. The A-ASSOCIATE PDUs are encoded and decoded by
:mod:`~dicomtrolley.formats.association`, the presentation contexts and roles
negotiated by :mod:`~dicomtrolley.formats.negotiation`; what the association
may use is in :attr:`Link.contexts` (:class:`~dicomtrolley.formats.negotiation.
AcceptedContext` values).

Timeouts need no watchdog thread here: every wait on the socket, connecting
and the wait for the A-ASSOCIATE-AC included, is cut into short slices, between
which the deadlines, the idle time since the peer last sent anything, and the
caller's ``cancelled()`` are checked. ``DICOMQR(debug=True)`` logs the
association and its messages (:mod:`~dicomtrolley.dimse.trace`).

As acceptor (:meth:`Link.accept`, for the storage SCP that receives C-MOVE
sub-operations), the same loop runs once the A-ASSOCIATE-RQ is read, vetted
(called and calling AE title, the peer's address) and answered with an
A-ASSOCIATE-AC or -RJ (PS3.8 9.3.3, 9.3.4), all with our sans-I/O codec
(:mod:`~dicomtrolley.formats.association`, :mod:`~dicomtrolley.formats.
negotiation`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.uid import UID

from dicomtrolley.dimse import tls, trace
from dicomtrolley.dimse.contexts import Proposal
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
from dicomtrolley.formats.association import (
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    ExtendedNegotiation,
    RoleSelection,
    UserInformation,
    decode_association,
    presentation_contexts,
)
from dicomtrolley.formats.negotiation import AcceptedContext
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
#: The most bytes taken from the socket at once (over TLS: the records already
#: received, each of at most 16 KiB, gathered): the reader's buffer grows to
#: this while the peer sends faster than we read.
READ_BLOCK = dul.RECEIVE_SIZE
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
    trace:
        Whether the protocol trace is logged (:mod:`~dicomtrolley.dimse.trace`).
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
        contexts: dict[int, AcceptedContext],
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
        self.trace = trace.enabled()
        self._incoming = trace.Incoming(peer) if self.trace else None
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._deferred: OSError | None = None

    # -- opening ---------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        peer: Peer,
        contexts: Sequence[Proposal],
        *,
        operation: str,
        timeouts: DIMSETimeouts,
        roles: Sequence[RoleSelection] = (),
        extended: Sequence[ExtendedNegotiation] = (),
        cancelled: Cancelled = _never,
    ) -> Link:
        """Open a TCP connection to peer and negotiate an association.

        ``contexts`` are proposed with IDs 1, 3, 5 ... in their order;
        ``roles``: our SCP/SCU roles to propose per SOP class (PS3.7 D.3.3.4);
        ``extended``: SOP class extended negotiation items to propose (such as
        relational queries, PS3.4 C.5.1), whose answers are in :attr:`extended`.
        ``cancelled()`` is looked at while connecting and waiting for the
        answer, at least every :data:`SLICE` seconds.

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
            The peer aborted or closed the connection during negotiation, or
            ``cancelled()`` said the caller went away.
        DULValueError
            What we would propose cannot be encoded (more than 128 contexts).
        """
        request = associate_rq(peer, contexts, roles, extended)
        encoded = request.encode()
        sock = _connect(peer, timeouts, operation, cancelled)
        try:
            sock.settimeout(timeouts.connect)
            try:
                sock.sendall(encoded)
            except OSError as error:  # reset; TLS 1.3: our certificate refused
                raise _lost_answer(sock, error, peer, operation) from error
            if trace.enabled():
                trace.request(peer, request)
            raw = _read_association_answer(
                sock, peer, timeouts, operation, cancelled=cancelled
            )
            answer, accepted, peer_max = _negotiated(raw, request, peer, operation)
        except BaseException:
            with contextlib.suppress(OSError):
                sock.settimeout(0)
                sock.send(dul.abort())
            sock.close()
            raise
        logger.debug(
            "association with %s accepted: %d of %d contexts, peer's maximum PDU %d",
            peer,
            len(accepted),
            len(request.presentation_contexts),
            peer_max,
        )
        link = cls(sock, peer, timeouts, accepted, peer_max, operation)
        link.extended = {
            item.sop_class_uid: item.info
            for item in answer.user_information.extended_negotiation
        }
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
            if trace.enabled():
                trace.received_request(unknown, request)
            refusal = _vet_titles(request, aet) or vet(request, host)
            if refusal is not None:
                rejection = AssociateRJ(refusal.result, refusal.source, refusal.reason)
                _send_answer(sock, rejection.encode(), unknown, operation)
                if trace.enabled():
                    trace.rejected("sent", unknown, rejection)
                raise AssociationRejectedError(
                    f"association from {request.calling_ae_title!r} refused: "
                    f"{refusal.why}",
                    peer=unknown,
                    operation=operation,
                )
            answer = negotiate(request)
            reply = negotiation.accept(
                request,
                answer,
                maximum_length=MAXIMUM_PDU_SIZE,
                implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            )
            _send_answer(sock, reply.encode(), unknown, operation)
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise
        peer = Peer(host, port, aet, request.calling_ae_title)
        accepted = dict(answer.accepted)
        if trace.enabled():
            trace.accepted("sent", peer, reply, accepted, answer.refused)
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

    def context_for(self, abstract_syntax: str) -> AcceptedContext | None:
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
        if self.trace:
            size = None if dataset is None else len(dataset)
            trace.message(
                "sent", self.peer, context_id, dul.decode_command(command), size
            )

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
            refused = tls.refusal(error, self.peer, self.operation)
            if refused is not None:
                raise refused from error
            raise self._broken(f"connection lost while sending: {error}") from error

    def receive(
        self,
        deadline: float | None = None,
        cancelled: Cancelled = _never,
        heard: Heard | None = None,
    ) -> list[dul.Event]:
        """The next PDUs and P-DATA fragments from the peer.

        The fragments are views of the link's read buffer, valid until the
        next call (whoever keeps a piece of one copies it).

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
                events = self.reader.receive(self._fill, READ_BLOCK)
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
                refused = tls.refusal(error, self.peer, self.operation)
                if refused is not None:
                    raise refused from error
                raise self._broken(f"connection lost: {error}") from error
            except dul.DULProtocolError as error:
                self.abort()
                raise self._broken(f"protocol error: {error}") from error
            if events is None:
                self._lost()
                raise self._broken("the peer closed the connection")
            self._check_deadline(deadline)
            if events:
                if self._incoming is not None:
                    self._incoming.events(events)
                return events
            last_heard = time.monotonic()

    def _fill(self, view: memoryview) -> int:
        """Read what the peer sent into view, after waiting at most one slice
        (TimeoutError); 0 when it closed the connection.

        A TLS socket gives one record (at most 16 KiB) per call: the records
        already received are gathered without waiting, up to the size of view,
        so that each turn of :meth:`receive`'s loop handles as much as it would
        on plain TCP. An error met while gathering is raised by the next call.
        """
        if self._deferred is not None:
            error, self._deferred = self._deferred, None
            raise error
        if not self._tls:
            return self.sock.recv_into(view)
        filled = self.sock.recv_into(view)
        if not filled:
            return 0
        size = len(view)
        self.sock.setblocking(False)
        try:
            while filled < size:
                more = self.sock.recv_into(view[filled:])
                if not more:
                    break
                filled += more
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            pass  # nothing more for now
        except OSError as error:
            self._deferred = error
        finally:
            self.sock.settimeout(self._slice)
        return filled

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
            if self.trace:
                trace.pdu("sent", self.peer, dul.A_RELEASE_RQ)
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
        if self.trace:
            trace.pdu("sent", self.peer, dul.A_RELEASE_RP)
        self._lost()

    def abort(self) -> None:
        """Send an A-ABORT (best effort) and close the connection."""
        if not self.open:
            return
        with contextlib.suppress(OSError):
            self.sock.settimeout(1.0)
            self.sock.sendall(dul.abort())
        if self.trace:
            trace.pdu("sent", self.peer, dul.A_ABORT)
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


def associate_rq(
    peer: Peer,
    contexts: Sequence[Proposal],
    roles: Sequence[RoleSelection] = (),
    extended: Sequence[ExtendedNegotiation] = (),
) -> AssociateRQ:
    """Our A-ASSOCIATE-RQ to peer: contexts numbered 1, 3, 5 ..., our maximum
    PDU length and implementation (PS3.7 D.3.3.1, D.3.3.2), roles and extended
    negotiation items."""
    return AssociateRQ(
        peer.aec,
        peer.aet,
        presentation_contexts(contexts),
        UserInformation(
            maximum_length=MAXIMUM_PDU_SIZE,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            roles=tuple(roles),
            extended_negotiation=tuple(extended),
        ),
        APPLICATION_CONTEXT_NAME,
    )


def _connect(
    peer: Peer, timeouts: DIMSETimeouts, operation: str, cancelled: Cancelled
) -> socket.socket:
    """A TCP connection to peer within ``timeouts.connect``, each address in
    turn; ``cancelled()`` is looked at every SLICE seconds meanwhile."""
    deadline = time.monotonic() + timeouts.connect
    try:
        addresses = socket.getaddrinfo(peer.host, peer.port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise DIMSEConnectionError(
            f"cannot connect: {error.strerror or error}", peer=peer, operation=operation
        ) from error
    failure: OSError | None = None
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            _connect_in_slices(sock, address, deadline, cancelled)
        except OSError as error:  # refused, unreachable: the next address
            sock.close()
            failure = error
            continue
        except BaseException as error:
            sock.close()
            if isinstance(error, _Cancelled):
                raise AssociationAbortedError(
                    "aborted while connecting: cancelled by the caller",
                    peer=peer,
                    operation=operation,
                ) from None
            if isinstance(error, _OutOfTime):
                raise DIMSETimeoutError(
                    f"no TCP connection within {timeouts.connect:g} s",
                    peer=peer,
                    operation=operation,
                ) from None
            raise
        with contextlib.suppress(OSError):
            # a DIMSE message is several small writes: no waiting for delayed ACKs
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if peer.tls is not None:  # DICOM over TLS (PS3.15 B): handshake in slices
            return tls.wrap_client(sock, peer, peer.tls, timeouts, operation, cancelled)
        return sock
    detail = (failure.strerror or str(failure)) if failure else "no address"
    raise DIMSEConnectionError(
        f"cannot connect: {detail}", peer=peer, operation=operation
    ) from failure


class _Cancelled(Exception):
    """The caller went away while we were connecting."""


class _OutOfTime(Exception):
    """The connect timeout passed."""


def _connect_in_slices(
    sock: socket.socket, address: Any, deadline: float, cancelled: Cancelled
) -> None:
    """Connect sock without blocking for more than SLICE seconds at a time.

    Raises OSError (refused, unreachable ...), _Cancelled or _OutOfTime.
    """
    sock.setblocking(False)
    code = sock.connect_ex(address)
    if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
        raise OSError(code, os.strerror(code))
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        while code != 0:
            if cancelled():
                raise _Cancelled()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _OutOfTime()
            if selector.select(min(SLICE, remaining)):
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code != 0:
                    raise OSError(code, os.strerror(code))
                break
    sock.setblocking(True)


_ANSWERS = frozenset({dul.A_ASSOCIATE_AC, dul.A_ASSOCIATE_RJ, dul.A_ABORT})
_REQUESTS = frozenset({dul.A_ASSOCIATE_RQ, dul.A_ABORT})


def _read_association_answer(
    sock: socket.socket,
    peer: Peer,
    timeouts: DIMSETimeouts,
    operation: str,
    wanted: frozenset[int] = _ANSWERS,
    cancelled: Cancelled = _never,
) -> dul.PDU:
    """The first PDU from sock, within ``timeouts.connect``, if of a wanted
    type; read in slices between which ``cancelled()`` is looked at."""
    reader = dul.PDUReader(max_length=1024 * 1024)
    deadline = time.monotonic() + timeouts.connect
    while True:
        if cancelled():
            raise _aborted_during_negotiation(
                peer, operation, "cancelled by the caller"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _no_answer(peer, timeouts, operation)
        sock.settimeout(min(SLICE, remaining))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError as error:
            if wanted is _ANSWERS:
                raise _lost_answer(sock, error, peer, operation) from error
            raise _aborted_during_negotiation(peer, operation, str(error)) from error
        if not data:
            if wanted is _ANSWERS:
                raise _lost_answer(sock, None, peer, operation)
            raise _aborted_during_negotiation(peer, operation, "connection closed")
        if not reader.buffered and data[:2] in _TLS_RECORDS:
            raise _speaks_tls(sock, peer, operation, wanted is _REQUESTS)
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


def _negotiated(
    raw: dul.PDU, request: AssociateRQ, peer: Peer, operation: str
) -> tuple[AssociateAC, dict[int, AcceptedContext], int]:
    """The peer's A-ASSOCIATE-AC, the contexts it lets us use and its maximum
    PDU length; or the error its answer means."""
    if raw.type == dul.A_ABORT:
        if trace.enabled():
            trace.pdu("received", peer, dul.A_ABORT)
        raise _aborted_during_negotiation(peer, operation, "A-ABORT")
    try:
        answer = decode_association(raw.raw)
        if isinstance(answer, AssociateRJ):
            if trace.enabled():
                trace.rejected("received", peer, answer)
            raise rejection_error(answer, peer, operation)
        if not isinstance(answer, AssociateAC):
            raise dul.DULProtocolError("an A-ASSOCIATE-RQ in answer to ours")
        result = negotiation.negotiate_as_requestor(request, answer)
    except dul.DULProtocolError as error:
        raise _aborted_during_negotiation(peer, operation, str(error)) from error
    if trace.enabled():
        trace.accepted("received", peer, answer, result.accepted, result.refused)
    if not result.accepted:
        reasons: dict[str, str] = {}
        for refused in result.refused:
            name = UID(refused.abstract_syntax).name or refused.abstract_syntax
            reasons.setdefault(name, refused.describe().split(": ", 1)[-1])
        listed = ", ".join(f"{name}: {why}" for name, why in reasons.items())
        raise ServiceNotSupportedError(
            f"the peer accepted none of the proposed presentation contexts ({listed})",
            peer=peer,
            operation=operation,
        )
    return answer, dict(result.accepted), result.maximum_length


def rejection_error(rejection: AssociateRJ, peer: Peer, operation: str) -> DIMSEError:
    """The error for the peer's A-ASSOCIATE-RJ."""
    detail = rejection.describe()
    if rejection.transient:
        return AssociationBusyError(
            f"association {detail}; try again later",
            peer=peer,
            operation=operation,
        )
    return AssociationRejectedError(
        f"association {detail}. Check the AE titles: the PACS must know the "
        f"calling AE title {peer.aet!r} and answer to the called AE title "
        f"{peer.aec!r}",
        peer=peer,
        operation=operation,
    )


def _no_answer(peer: Peer, timeouts: DIMSETimeouts, operation: str) -> DIMSEError:
    return DIMSETimeoutError(
        f"no answer to the association request within {timeouts.connect:g} s",
        peer=peer,
        operation=operation,
    )


#: The first two bytes of a TLS record: an alert or a handshake message of TLS
#: 1.x (record version 3.x). No PDU type is 0x15 or 0x16 (PS3.8 9.3.1).
_TLS_RECORDS = frozenset({b"\x15\x03", b"\x16\x03"})


def _speaks_tls(
    sock: socket.socket, peer: Peer, operation: str, acceptor: bool
) -> DIMSEError:
    """The error for a peer that sent TLS where a PDU was due on plain TCP."""
    if isinstance(sock, ssl.SSLSocket):  # a TLS record inside TLS: not DICOM
        return _aborted_during_negotiation(peer, operation, "a TLS record in TLS")
    if acceptor:
        # A-ABORT in answer: the client's TLS handshake fails at once, and says
        # that we do not speak TLS
        with contextlib.suppress(OSError):
            sock.sendall(dul.abort())
        return tls.DIMSETLSError(
            "the peer speaks TLS and this storage SCP does not: give it a "
            "certificate (store_tls, --tls-cert and --tls-key), or tell the PACS "
            "to move without TLS",
            peer=peer,
            operation=operation,
        )
    return tls.DIMSETLSError(
        "the peer seems to speak TLS: it answered our association request with "
        "a TLS record. Use --tls (tls = ... in a profile, DIMSETLS in a script)",
        peer=peer,
        operation=operation,
    )


def _lost_answer(
    sock: socket.socket, error: OSError | None, peer: Peer, operation: str
) -> DIMSEError:
    """The error for a connection broken (error) or closed (None) before the
    answer to our association request.

    A TLS alert refusing us is permanent (TLS 1.3 servers send it after the
    client's side of the handshake is over); a TLS peer's bare close may be
    the same refusal with its alert lost (:func:`~dicomtrolley.dimse.tls.
    closed_after_handshake`); a plain connection reset or closed may be a
    TLS port.
    """
    if error is not None:
        refused = tls.refusal(error, peer, operation)
        if refused is not None:
            return refused
    detail = "connection closed" if error is None else str(error)
    if isinstance(sock, ssl.SSLSocket):
        return tls.closed_after_handshake(sock, peer, operation, detail)
    if error is None or isinstance(error, ConnectionResetError):
        detail += "; if the peer expects TLS on this port, use --tls"
    return _aborted_during_negotiation(peer, operation, detail)


def _send_answer(sock: socket.socket, data: bytes, peer: Peer, operation: str) -> None:
    """Send our A-ASSOCIATE-AC/RJ; a peer gone meanwhile is an abort, not OSError."""
    try:
        sock.sendall(data)
    except OSError as error:  # ssl.SSLError and TimeoutError included
        raise _aborted_during_negotiation(peer, operation, str(error)) from error


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
