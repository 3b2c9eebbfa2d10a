"""The storage SCP that receives C-MOVE sub-operations (PS3.4 B.2, C.4.2).

A C-MOVE asks the PACS to send instances to a *move destination*: an AE title
the PACS maps to a host and port of its own configuration. The downloader
starts this SCP on ``store_port`` with AE title ``store_aet`` for the length of
a download and stops it afterwards.

Where it listens: the PACS must be able to connect to it, so by default it
binds every interface (``0.0.0.0``), except when the PACS is on this machine
(its host is a loopback address), when it binds ``127.0.0.1``. Pass
``bind_address`` to choose. Whatever the bind address, it only stores what
arrives from the PACS's own address(es) and while a C-MOVE of ours waits for it;
other C-STORE requests are refused (status A700) and logged.

Starting and stopping it is cheap: the presentation contexts it accepts (every
storage SOP class with every transfer syntax, about 7,600 UIDs to validate)
are built once per process, and its accept loop looks for the stop request
every :data:`SERVER_POLL_INTERVAL` seconds rather than pynetdicom's default
0.5 s, which each download would otherwise wait out when the SCP stops.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import socketserver
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.transport import ThreadedAssociationServer

from dicomtrolley.dimse.associations import new_ae, no_delay, quiet
from dicomtrolley.dimse.errors import StoreSCPError
from dicomtrolley.dimse.retrieve import STATUS_OUT_OF_RESOURCES, Receiver
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("dimse")

VERIFICATION = "1.2.840.10008.1.1"
#: Seconds between the accept loop's looks for a stop request.
SERVER_POLL_INTERVAL = 0.02


@functools.cache
def storage_contexts() -> tuple[PresentationContext, ...]:
    """What the SCP accepts: every storage SOP class in every transfer syntax,
    and Verification."""
    abstract = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    return tuple(
        build_context(uid, ALL_TRANSFER_SYNTAXES) for uid in [*abstract, VERIFICATION]
    )


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
        The move destination: the AE title and port registered on the PACS.
    pacs:
        The PACS the moves go to.
    accept_from:
        Who may store: ``"pacs"`` (default) the addresses the PACS host resolves
        to, else the given address(es), or None for anyone.
    receiver:
        Saves what arrives (routes it to the waiting C-MOVE).
    bind_address:
        Where to listen; default :func:`default_bind_address` of the PACS host.
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
    ) -> None:
        self.aet = aet
        self.port = port
        self.pacs = pacs
        self.receiver = receiver
        self.timeouts = timeouts
        self.bind_address = bind_address or default_bind_address(pacs.host)
        if accept_from == "pacs":
            addresses = addresses_of(pacs.host)
            self.accept_from: set[str] | None = addresses or None
            if not addresses:
                logger.warning(
                    "%s cannot resolve %s; it will store what any host sends",
                    self,
                    pacs.host,
                )
        elif accept_from is None:
            self.accept_from = None
        elif isinstance(accept_from, str):
            self.accept_from = {accept_from}
        else:
            self.accept_from = set(accept_from)
        if self.accept_from and is_loopback(self.accept_from):
            self.accept_from |= {"127.0.0.1", "::1"}
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None

    def __str__(self) -> str:
        return f"storage SCP {self.aet} on {self.bind_address}:{self.port}"

    def start(self) -> StoreSCP:
        ae = new_ae(self.aet, self.timeouts)
        ae.require_called_aet = True
        try:
            server = ae.make_server(
                (self.bind_address, self.port),
                contexts=list(storage_contexts()),
                evt_handlers=[
                    (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_CONN_OPEN, self._on_open),
                ],
                server_class=ThreadedAssociationServer,
            )
        except OSError as error:
            raise StoreSCPError(
                f"cannot listen on {self.bind_address}:{self.port} for C-MOVE "
                f"sub-operations: {error}. Choose another store_port (it must be "
                "the one registered on the PACS for the move destination)",
                peer=self.pacs,
                operation="C-MOVE",
            ) from error
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SERVER_POLL_INTERVAL},
            name=f"dicomtrolley-{self}",
            daemon=True,
        )
        self._thread.start()
        logger.info("started %s", self)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is None:
            return
        # The server was not started by its AE (see the module docstring), so
        # the stop is socketserver's, without pynetdicom's AE bookkeeping
        socketserver.BaseServer.shutdown(server)
        server.server_close()
        if thread is not None:
            thread.join()
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

    def active(self) -> bool:
        """True while a storage association received something within the idle time."""
        server = self._server
        if server is None:
            return False
        return any(
            assoc.dul is not None and not assoc.dul.idle_timer_expired()
            for assoc in server.active_associations
        )

    def _on_open(self, event: Any) -> None:
        no_delay(event)
        quiet(event.assoc)

    def _on_store(self, event: Any) -> int:
        address = str(event.assoc.requestor.address)
        if self.accept_from is not None and address not in self.accept_from:
            logger.warning(
                "%s refused a C-STORE from %s (%s): not the PACS %s",
                self,
                address,
                event.assoc.requestor.ae_title,
                self.pacs.host,
            )
            return STATUS_OUT_OF_RESOURCES
        return self.receiver.route(event)
