"""The storage SCP that receives C-MOVE sub-operations (PS3.4 B.2, C.4.2).

A C-MOVE asks the PACS to send instances to a *move destination*: an AE title
the PACS maps to a host and port of its own configuration. The downloader
starts this SCP on ``store_port`` with AE title ``store_aet`` for the length of
a download and stops it afterwards.

Where it listens: the PACS must be able to connect to it, so by default it
binds every interface (``0.0.0.0``), except when the PACS is on this machine
(its host is a loopback address), when it binds ``127.0.0.1``. Pass
``bind_address`` to choose.

Who may store: an association is rejected (A-ASSOCIATE-RJ, PS3.8 9.3.4) unless
it calls our AE title, comes from the PACS's own address(es) (``accept_from``)
and, when ``accept_aets`` is given, with one of those calling AE titles. Each
accepted association runs on a :class:`~dicomtrolley.dimse.link.Link` in a
thread of its own; its C-STORE requests go through the same
:class:`~dicomtrolley.dimse.incoming.StoreIntake` as C-GET's, routed to the
C-MOVE of ours that waits for them (several may run at once); an instance none
of them waits for is refused (status A700) and logged.

Over TLS (``tls``, a :class:`~dicomtrolley.dimse.tls.DIMSETLS` with our
certificate), each accepted connection is secured by a handshake before the
association request is read; with ``tls.verify`` the PACS must present a
certificate the CAs vouch for. A connection whose handshake fails is logged
and closed.

Starting and stopping is cheap: one listening socket and a thread that waits
for connections or a wake-up byte; stopping shuts the open associations'
sockets, so their threads end at once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from dicomtrolley.dimse.contexts import accept_storage
from dicomtrolley.dimse.errors import (
    AssociationRejectedError,
    StoreSCPError,
)
from dicomtrolley.dimse.incoming import (
    Command,
    CommandAssembler,
    StoreIntake,
)
from dicomtrolley.dimse.link import Link, Rejection
from dicomtrolley.dimse.retrieve import Receiver, Tally
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.dimse.tls import DIMSETLS, DIMSETLSError, wrap_server
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.formats import dimse_commands, dul
from dicomtrolley.formats.association import AssociateRQ
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("dimse")

OPERATION = "C-MOVE"
#: Storage associations served at once; more are rejected (transient).
MAX_ASSOCIATIONS = 32


def addresses_of(host: str) -> set[str]:
    """The IP addresses host resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return set()
    return {str(info[4][0]) for info in infos}


def is_loopback(addresses: Iterable[str]) -> bool:
    found = [ipaddress.ip_address(a.split("%")[0]) for a in addresses]
    return bool(found) and all(a.is_loopback for a in found)


def default_bind_address(pacs_host: str) -> str:
    """127.0.0.1 for a PACS on this machine, else every interface."""
    return "127.0.0.1" if is_loopback(addresses_of(pacs_host)) else "0.0.0.0"


class StoreSCP:
    """A storage SCP for the C-MOVE sub-operations of one download.

    Parameters
    ----------
    aet, port:
        The move destination: the AE title and port registered on the PACS
        (port 0: any free port, in :attr:`port` once started).
    pacs:
        The PACS the moves go to.
    receiver:
        Saves what arrives (routed to the waiting C-MOVE).
    timeouts:
        ``connect`` for the association request, ``idle`` for silence on an
        open association.
    bind_address:
        Where to listen; default :func:`default_bind_address` of the PACS host.
    accept_from:
        Who may connect: ``"pacs"`` (default) the addresses the PACS host
        resolves to, else the given address(es), or None for anyone.
    accept_aets:
        The calling AE titles allowed (None: any).
    spool:
        Where instances are written as they arrive (default: the system
        temporary folder; the output folder keeps the final rename on one
        file system).
    tls:
        Accept only TLS connections, with this certificate (see the module
        docstring); None: plain TCP.
    """

    def __init__(
        self,
        aet: str,
        port: int,
        *,
        pacs: Peer,
        receiver: Receiver,
        timeouts: DIMSETimeouts,
        bind_address: str | None = None,
        accept_from: Iterable[str] | str | None = "pacs",
        accept_aets: Iterable[str] | None = None,
        spool: Path | None = None,
        tls: DIMSETLS | None = None,
    ) -> None:
        self.aet = aet
        self.tls = tls
        self.port = port
        self.pacs = pacs
        self.receiver = receiver
        self.timeouts = timeouts
        self.bind_address = bind_address or default_bind_address(pacs.host)
        self.accept_from = _allowed_addresses(accept_from, pacs, self)
        self.accept_aets = None if accept_aets is None else set(accept_aets)
        self.spool = spool or Path(tempfile.gettempdir())
        self._heard = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._serving: dict[threading.Thread, socket.socket] = {}

    def __str__(self) -> str:
        return f"storage SCP {self.aet} on {self.bind_address}:{self.port}"

    # -- starting and stopping ----------------------------------------------------

    def start(self) -> StoreSCP:
        if self.tls is not None:
            self.tls.server_context()  # a ConfigError naming the file, now
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreSCPError(
                f"cannot create {self.spool} for received instances: {error}",
                peer=self.pacs,
                operation=OPERATION,
            ) from error
        family = socket.AF_INET6 if ":" in self.bind_address else socket.AF_INET
        try:
            listener = socket.create_server(
                (self.bind_address, self.port), family=family, backlog=16
            )
        except OSError as error:
            raise StoreSCPError(
                f"cannot listen on {self.bind_address}:{self.port} for C-MOVE "
                f"sub-operations: {error}. Choose another store_port (it must be "
                "the one registered on the PACS for the move destination)",
                peer=self.pacs,
                operation=OPERATION,
            ) from error
        listener.setblocking(False)  # accept() after select() must not wait
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._wake = socket.socketpair()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._listen, name=f"dicomtrolley-{self}", daemon=True
        )
        self._thread.start()
        logger.info("started %s", self)
        return self

    def stop(self) -> None:
        """Stop listening and end every open association now."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        assert self._wake is not None and self._listener is not None
        with contextlib.suppress(OSError):
            self._wake[1].send(b"x")
        thread.join()
        with self._lock:
            serving = dict(self._serving)
        for sock in serving.values():  # wakes its thread's recv at once
            with contextlib.suppress(OSError):
                # the TCP socket's own shutdown, TLS or not: an SSLSocket's
                # would unwrap it under the thread still reading it
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        for worker in serving:
            worker.join()
        self._listener.close()
        for end in self._wake:
            end.close()
        self._listener = self._wake = None
        logger.info("stopped %s", self)

    def __enter__(self) -> StoreSCP:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def last_heard(self) -> float:
        """time.monotonic() when a storage association last received something."""
        return self._heard

    # -- connections --------------------------------------------------------------

    def _listen(self) -> None:
        assert self._listener is not None and self._wake is not None
        listener, wake = self._listener, self._wake[0]
        while not self._stopping.is_set():
            try:
                ready, _, _ = select.select([listener, wake], [], [])
            except OSError:
                return
            if wake in ready:
                return
            try:
                sock, address = listener.accept()
            except OSError:
                continue
            worker = threading.Thread(
                target=self._serve,
                args=(sock, address),
                name=f"dicomtrolley-{self.aet}-{address[0]}:{address[1]}",
                daemon=True,
            )
            with self._lock:
                self._serving[worker] = sock
            worker.start()

    def _serve(self, sock: socket.socket, address: tuple[Any, ...]) -> None:
        me = threading.current_thread()
        try:
            try:
                if self.tls is not None:
                    sock = self._secure(sock, address, me, self.tls)
                link = Link.accept(
                    sock,
                    address,
                    aet=self.aet,
                    vet=self._vet,
                    negotiate=accept_storage,
                    operation=OPERATION,
                    timeouts=self.timeouts,
                )
            except (AssociationRejectedError, DIMSETLSError) as error:
                logger.warning("%s: %s", self, error)
                return
            except DICOMTrolleyError as error:
                logger.info("%s: %s", self, error)
                return
            if self._stopping.is_set():
                link.abort()
            try:
                self._associated(link)
            except DICOMTrolleyError as error:
                if not self._stopping.is_set():
                    logger.warning("%s: %s", self, error)
            finally:
                link.abort()
        finally:  # whatever happened, this association no longer counts
            self._forget(me)

    def _secure(
        self,
        sock: socket.socket,
        address: tuple[Any, ...],
        me: threading.Thread,
        tls: DIMSETLS,
    ) -> socket.socket:
        """sock after a TLS handshake, in place of it for :meth:`stop`."""
        peer = Peer(str(address[0]), int(address[1]), self.aet, "?", tls=tls)
        secured = wrap_server(
            sock, peer, tls, self.timeouts, OPERATION, self._stopping.is_set
        )
        with self._lock:
            self._serving[me] = secured
        return secured

    def _forget(self, worker: threading.Thread) -> None:
        with self._lock:
            self._serving.pop(worker, None)

    def _vet(self, request: AssociateRQ, address: str) -> Rejection | None:
        if self.accept_from is not None and address not in self.accept_from:
            return Rejection(1, 1, 1, f"{address} is not the PACS {self.pacs.host}")
        calling = request.calling_ae_title
        if self.accept_aets is not None and calling not in self.accept_aets:
            return Rejection(1, 1, 3, f"calling AE title {calling!r} not allowed")
        with self._lock:
            busy = len(self._serving)
        if busy > MAX_ASSOCIATIONS:
            return Rejection(2, 3, 2, f"{busy} associations open already")
        return None

    def _associated(self, link: Link) -> None:
        """Serve one association: C-STORE and C-ECHO, until released or aborted."""
        intake = StoreIntake(link, self.receiver, self.spool, self._route)
        commands = CommandAssembler()
        try:
            while link.open:
                events = link.receive(None, self._stopping.is_set)
                self._heard = time.monotonic()
                for event in events:
                    if isinstance(event, dul.PDU):
                        if event.type == dul.A_RELEASE_RQ and not intake.busy:
                            link.answer_release()
                            return
                        raise link.unexpected(event)
                    if not event.command:
                        intake.data(event)
                        continue
                    if intake.busy:
                        raise link.fail("protocol error: a command inside a data set")
                    try:
                        command = commands.feed(event)
                    except dul.DULProtocolError as error:
                        raise link.fail(f"protocol error: {error}") from error
                    if command is not None:
                        self._command(link, intake, command, event.context_id)
        finally:
            intake.discard()

    def _command(
        self, link: Link, intake: StoreIntake, command: Command, context_id: int
    ) -> None:
        field = dul.command_int(command, dul.COMMAND_FIELD)
        if field == dul.C_STORE_RQ:
            intake.start(command, context_id)
        elif field == dul.C_ECHO_RQ:
            answer = dimse_commands.c_echo_rsp(
                dul.command_int(command, dul.MESSAGE_ID),
                sop_class_uid=dul.command_str(command, dul.AFFECTED_SOP_CLASS_UID),
            )
            link.send(context_id, answer, None)
        else:
            raise link.fail(f"protocol error: unexpected DIMSE command 0x{field:04X}")

    def _route(self, command: Command) -> Tally | None:
        """The C-MOVE of ours this C-STORE request belongs to (PS3.7 9.1.1.1).

        By Move Originator Message ID; not by Move Originator AE Title, which
        some SCPs fill in with their own title (the emulator's C-MOVE SCP).
        """
        value = command.get(dul.MOVE_ORIGINATOR_MESSAGE_ID)
        msg_id = value if isinstance(value, int) else None
        sop_uid = dul.command_str(command, dul.AFFECTED_SOP_INSTANCE_UID)
        return self.receiver.tally_for(msg_id, sop_uid)


def _allowed_addresses(
    accept_from: Iterable[str] | str | None, pacs: Peer, scp: StoreSCP
) -> set[str] | None:
    if accept_from == "pacs":
        found = addresses_of(pacs.host)
        if not found:
            logger.warning(
                "%s cannot resolve %s; it will store what any host sends",
                scp,
                pacs.host,
            )
            return None
    elif accept_from is None:
        return None
    elif isinstance(accept_from, str):
        found = {accept_from}
    else:
        found = set(accept_from)
    if is_loopback(found):
        found |= {"127.0.0.1", "::1"}
    return found
