"""Opening associations, watching them, and turning what went wrong into errors.

One place for the transport concerns of DIMSE (PS3.8): the AE set-up with its
timeouts, the association request, the checks of what the peer accepted, and a
:class:`Watchdog` that enforces the idle and total timeouts of an operation.

Why a watchdog: while a pynetdicom requestor runs ``send_c_find``/``send_c_get``
/``send_c_move``, the association's own reactor is paused, so its network
(idle) timeout is not enforced, and the DIMSE timeout counts from one complete
message to the next, so it would also cut off a large instance that is still
arriving. The watchdog instead looks at the DUL's idle timer, which every
received PDU restarts, plus any other signs of life the operation reports (a
C-STORE being saved, data on the C-MOVE storage association). When the peer is
silent for ``idle`` seconds, or the operation runs past ``total``, it aborts the
association and wakes up the waiting operation, which then raises
:class:`~dicomtrolley.dimse.errors.DIMSETimeoutError`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from dicomtrolley.dimse.buffered import BufferedAE, supported
from dicomtrolley.dimse.errors import (
    AssociationAbortedError,
    DIMSEConnectionError,
    DIMSEError,
    DIMSETimeoutError,
    ServiceNotSupportedError,
)
from dicomtrolley.dimse.link import rejection_error
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("dimse")

#: The largest PDU we announce we can receive (DCMTK's own maximum).
MAXIMUM_PDU_SIZE = 131072
#: Seconds pynetdicom's DUL sleeps when idle (its default: 0.001); see quiet().
DUL_POLL_INTERVAL = 0.0002

_PYNETDICOM_LOGGER = logging.getLogger("pynetdicom")
_STANDARD_HANDLER_MODULE = "pynetdicom._handlers"
_PER_MESSAGE_EVENTS = (
    evt.EVT_PDU_RECV,
    evt.EVT_PDU_SENT,
    evt.EVT_DIMSE_RECV,
    evt.EVT_DIMSE_SENT,
)

EventHandler = tuple[Any, Callable[..., Any]]


def receive_to_files() -> None:
    """Have pynetdicom write each received C-STORE dataset straight to a file.

    Sets pynetdicom's process-wide ``_config.STORE_RECV_CHUNKED_DATASET``: a
    received dataset then goes to a temporary file in the system temporary
    folder (``TMPDIR``) as it arrives, instead of into memory, and handlers find
    it at ``event.dataset_path``. ``event.dataset`` keeps working for other code
    in the process; ``event.encoded_dataset()`` does not.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True


def quiet(assoc: Association, fast_poll: bool = True) -> None:
    """Tune assoc for throughput: no per-PDU logging, a shorter DUL poll.

    pynetdicom's standard logging handlers cost a few microseconds per PDU,
    which adds up to a quarter of the time of a large C-GET; they stay when the
    ``pynetdicom`` logger shows DEBUG. Its DUL reactor sleeps 1 ms whenever
    nothing is to be read or sent, which costs up to 3 ms per instance in the
    C-STORE / response round trips of a retrieve; the poll interval has no
    public setting, so the attribute is set where it exists (not with
    ``fast_poll=False``: for associations that mostly wait, like a C-MOVE's).
    """
    dul = getattr(assoc, "dul", None)
    if fast_poll and dul is not None and hasattr(dul, "_run_loop_delay"):
        dul._run_loop_delay = DUL_POLL_INTERVAL
    if _PYNETDICOM_LOGGER.isEnabledFor(logging.DEBUG):
        return
    for event in _PER_MESSAGE_EVENTS:
        bound = cast(list[tuple[Any, Any]], assoc.get_handlers(event))
        for handler, _args in list(bound):
            if getattr(handler, "__module__", "") == _STANDARD_HANDLER_MODULE:
                assoc.unbind(event, handler)


def new_ae(aet: str, timeouts: DIMSETimeouts) -> AE:
    """An AE with our timeouts. DIMSE waits are left to the Watchdog (see above),
    except for a backstop at the total timeout. Its requested associations read
    the socket in blocks (see :mod:`dicomtrolley.dimse.buffered`)."""
    ae = BufferedAE(ae_title=aet) if supported() else AE(ae_title=aet)
    ae.connection_timeout = timeouts.connect
    ae.acse_timeout = timeouts.connect
    ae.network_timeout = timeouts.idle
    ae.dimse_timeout = timeouts.total
    ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
    return ae


def open_association(
    peer: Peer,
    contexts: Sequence[PresentationContext],
    *,
    operation: str,
    timeouts: DIMSETimeouts,
    ext_neg: Iterable[Any] = (),
    handlers: Iterable[EventHandler] = (),
    fast_poll: bool = True,
) -> Association:
    """An established association with peer, or the error that says why not.

    ``fast_poll``: see :func:`quiet`.

    Raises
    ------
    DIMSEConnectionError
        No TCP connection (refused, unreachable, unknown host).
    DIMSETimeoutError
        No connection or no answer to the association request within
        ``timeouts.connect``.
    AssociationRejectedError, AssociationBusyError
        The peer rejected the association (with its reason).
    ServiceNotSupportedError
        The peer accepted none of the presentation contexts.
    AssociationAbortedError
        The peer aborted or closed the connection during negotiation.
    """
    ae = new_ae(peer.aet, timeouts)
    connected = threading.Event()
    started = time.monotonic()
    try:
        assoc = ae.associate(
            peer.host,
            peer.port,
            contexts=list(contexts),
            ae_title=peer.aec,
            ext_neg=list(ext_neg) or None,
            evt_handlers=[
                (evt.EVT_CONN_OPEN, lambda event: _opened(event, connected)),
                *handlers,
            ],
        )
    except OSError as error:  # e.g. a host name that does not resolve
        raise DIMSEConnectionError(
            f"cannot connect: {error}", peer=peer, operation=operation
        ) from error
    if assoc.is_established:
        quiet(assoc, fast_poll)
        return assoc
    elapsed = time.monotonic() - started
    raise association_error(
        assoc, peer, operation, timeouts, connected.is_set(), elapsed
    )


def no_delay(event: evt.Event) -> None:
    """Turn Nagle's algorithm off on a DIMSE connection.

    A DIMSE message is several small writes (PDUs); with Nagle on, each waits for
    the peer's delayed ACK (about 40 ms). DCMTK and Orthanc need TCP_NODELAY=1 in
    their environment for the same reason.
    """
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _opened(event: evt.Event, connected: threading.Event) -> None:
    no_delay(event)
    connected.set()


def association_error(
    assoc: Association,
    peer: Peer,
    operation: str,
    timeouts: DIMSETimeouts,
    connected: bool,
    elapsed: float,
) -> DIMSEError:
    """Why an association request did not succeed, as an exception."""
    if assoc.is_rejected:
        return rejection_error(assoc.acceptor.primitive, peer, operation)
    if not connected:
        if elapsed >= timeouts.connect * 0.9:
            return DIMSETimeoutError(
                f"no TCP connection within {timeouts.connect:g} s",
                peer=peer,
                operation=operation,
            )
        return DIMSEConnectionError(
            f"cannot connect: {_connect_problem(peer, timeouts.connect)}",
            peer=peer,
            operation=operation,
        )
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        return ServiceNotSupportedError(
            "the peer accepted none of the proposed presentation contexts "
            f"({', '.join(_context_names(assoc.rejected_contexts))})",
            peer=peer,
            operation=operation,
        )
    if elapsed >= timeouts.connect * 0.9:
        return DIMSETimeoutError(
            f"no answer to the association request within {timeouts.connect:g} s",
            peer=peer,
            operation=operation,
        )
    return AssociationAbortedError(
        "the peer aborted or closed the connection during association negotiation",
        peer=peer,
        operation=operation,
    )


def _connect_problem(peer: Peer, timeout: float) -> str:
    """What the operating system says when connecting to peer (a second try)."""
    try:
        with socket.create_connection((peer.host, peer.port), timeout=min(timeout, 3)):
            return "the connection failed (it works now: a transient problem)"
    except OSError as error:
        return error.strerror or str(error)


def _context_names(contexts: Iterable[PresentationContext]) -> list[str]:
    names = dict.fromkeys(
        getattr(cx.abstract_syntax, "name", str(cx.abstract_syntax)) for cx in contexts
    )
    return list(names)


def require_context(
    accepted: Iterable[PresentationContext], sop_class: str, peer: Peer, operation: str
) -> None:
    """Raise ServiceNotSupportedError when the accepted contexts lack sop_class."""
    if not any(cx.abstract_syntax == sop_class for cx in accepted):
        name = getattr(sop_class, "name", sop_class)
        raise ServiceNotSupportedError(
            f"the peer does not support {name} ({sop_class})",
            peer=peer,
            operation=operation,
        )


def release(assoc: Association) -> None:
    """Release assoc, or abort it when the peer does not answer the release.

    The wait for the A-RELEASE-RP is pynetdicom's (its ACSE timeout, our
    ``connect``). Its network (idle) timeout is switched off first: when both
    run out, the association's reactor and the release each send an A-ABORT,
    and the second one kills pynetdicom's DUL thread with an InvalidEventError
    (Evt15 in Sta13) that leaves the connection open.
    """
    if not assoc.is_established:
        return
    assoc.network_timeout = None
    try:
        assoc.release()
    except Exception:  # a peer that does not answer the release
        logger.debug("release failed; aborting", exc_info=True)
    if assoc.is_established:
        assoc.abort()


@contextlib.contextmanager
def ended(assoc: Association) -> Iterator[Association]:
    """Release assoc on the way out, or abort it when that is not possible."""
    try:
        yield assoc
    finally:
        release(assoc)


@contextlib.contextmanager
def ended_before_sending(assoc: Association) -> Iterator[None]:
    """Let a request on an association that has just ended end without an answer.

    An association can end between the check that it is established and the
    request (the peer aborts, the Watchdog of the previous request fires a
    moment late): pynetdicom's ``send_c_*`` then raise RuntimeError. Inside
    this block that is the same as no final response, which the caller turns
    into an AssociationAbortedError (transient) with its UIDs.
    """
    try:
        yield
    except RuntimeError:
        if assoc.is_established:
            raise
        logger.debug("the association ended before the request", exc_info=True)


class Watchdog:
    """Aborts an association when the peer is idle too long or time runs out.

    Parameters
    ----------
    assoc:
        The association of the operation (its DUL idle timer is one sign of life).
    timeouts:
        ``idle`` and ``total`` are enforced.
    alive:
        More signs of life: callables that return True while something is still
        happening (a C-STORE being saved, data on another association).
    """

    def __init__(
        self,
        assoc: Association,
        timeouts: DIMSETimeouts,
        alive: Sequence[Callable[[], bool]] = (),
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.assoc = assoc
        self.timeouts = timeouts
        self.alive = list(alive)
        self.cancelled = cancelled
        self.reason: str | None = None
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, name="dicomtrolley-watchdog", daemon=True
        )

    def __enter__(self) -> Watchdog:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cancel(self, reason: str = "cancelled") -> None:
        """Abort the operation now (the caller went away)."""
        self._fire(reason)

    @property
    def interval(self) -> float:
        return max(0.01, min(0.2, self.timeouts.idle / 20))

    def _run(self) -> None:
        total = self.timeouts.total
        last_alive = self._started
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            if self.cancelled():
                self._fire("cancelled by the caller")
                return
            if total is not None and now - self._started > total:
                self._fire("total")
                return
            if any(probe() for probe in self.alive):
                last_alive = now
                continue
            dul = self.assoc.dul
            quiet = dul is None or dul.idle_timer_expired()
            if quiet and now - last_alive >= self.timeouts.idle:
                self._fire("idle")
                return

    def _fire(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        timed_out = {
            "idle": f"silent for {self.timeouts.idle:g} s",
            "total": f"not done after {self.timeouts.total or 0:g} s",
        }
        logger.log(
            logging.WARNING if reason in timed_out else logging.INFO,
            "aborting association with %s (%s)",
            self.assoc.acceptor.ae_title,
            timed_out.get(reason, reason),
        )
        with contextlib.suppress(Exception):
            self.assoc.abort()
        # pynetdicom does not wake a DIMSE wait on a local abort: do it here
        with contextlib.suppress(Exception):
            self.assoc.dimse.msg_queue.put((None, None))

    def error(self, peer: Peer, operation: str, uids: Iterable[str] = ()) -> DIMSEError:
        """The exception for an operation that ended without a final response."""
        if self.reason == "idle":
            return DIMSETimeoutError(
                f"the peer sent nothing for {self.timeouts.idle:g} s (idle timeout)",
                peer=peer,
                operation=operation,
                uids=uids,
            )
        if self.reason == "total":
            return DIMSETimeoutError(
                f"not finished within {self.timeouts.total:g} s (total timeout)",
                peer=peer,
                operation=operation,
                uids=uids,
            )
        if self.reason is not None:
            return AssociationAbortedError(
                f"aborted: {self.reason}", peer=peer, operation=operation, uids=uids
            )
        return AssociationAbortedError(
            "the association ended without a final response (aborted, closed, or "
            "an invalid message from the peer)",
            peer=peer,
            operation=operation,
            uids=uids,
        )
