"""Fewer system calls on the receive path of pynetdicom's requestor associations.

pynetdicom's :class:`~pynetdicom.transport.AssociationSocket` reads each PDU
with a 6-byte ``recv`` for its header and then ``recv`` calls of at most 4096
bytes for its body, and its reactor asks ``select`` before each PDU whether
anything is there. For a 16 KB P-DATA-TF PDU (what Orthanc sends) that is five
``recv`` calls and a ``select`` in Python, about a fifth of the reader thread's
time in a large C-GET. :class:`BufferedAssociationSocket` reads whatever the
kernel has, up to :data:`READ_BLOCK` bytes, into a buffer of its own and hands
the PDUs out of it; ``ready`` is true while the buffer holds data.

Each PDU also passes through two of the DUL's ``queue.Queue`` (the state
machine's events and the received PDUs), both only ever used with ``put`` and
``get(block=False)`` by the DUL thread; :class:`BufferedAE` swaps them for
``queue.SimpleQueue``, which does the same without Python-level locking (about
a sixth of the reader thread's time before).

A peer that stops in the middle of a PDU: pynetdicom's socket blocks in
``recv`` until the connection ends, and with it the DUL thread, so neither
its timeouts nor an abort (which waits for that thread) can end the wait.
Here a wait for more bytes of a PDU is bounded by the association's network
(idle) timeout; past it ``recv`` raises :class:`TimeoutError`, which the DUL
takes as the connection closed (Evt17). Waits between PDUs are not affected
(the DUL only reads when ``select`` says there is something to read).

What callers see does not change otherwise: ``recv(n)`` returns n bytes, or
fewer when the peer closed the connection, and raises what the socket raises. TLS sockets
are left to pynetdicom (an ``SSLSocket`` buffers on its own), and so is every
pynetdicom version this was not checked against (see :func:`supported`).
"""

from __future__ import annotations

import queue
import socket
import ssl
from typing import Any

import pynetdicom
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket

#: The most bytes read from the socket at once (16 PDUs of 16 KB).
READ_BLOCK = 262144
#: DUL queues only used with put() and get(block=False) by pynetdicom 3.0.
_DUL_QUEUES = ("event_queue", "_recv_pdu")


def supported() -> bool:
    """Whether the pynetdicom in use is one this module was written against."""
    major = pynetdicom.__version__.split(".", 1)[0]
    return (
        major == "3"
        and callable(getattr(AE, "_create_socket", None))
        and callable(getattr(AssociationSocket, "recv", None))
        and isinstance(getattr(AssociationSocket, "ready", None), property)
    )


class BufferedAssociationSocket(AssociationSocket):
    """An AssociationSocket that reads in blocks of up to READ_BLOCK bytes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._block = bytearray(READ_BLOCK)
        self._view = memoryview(self._block)
        self._start = 0  # unread data: self._block[self._start:self._end]
        self._end = 0
        self._bounded = False  # reads bounded by the network timeout yet

    def _plain(self) -> socket.socket | None:
        """The socket when it is a plain (not TLS) one, else None."""
        sock = self.socket
        if isinstance(sock, ssl.SSLSocket) or not isinstance(sock, socket.socket):
            return None
        return sock

    @property
    def ready(self) -> bool:
        if self.socket is None or self._is_connected is False:
            return False
        if self._end > self._start:
            return True
        return super().ready

    def recv(self, nr_bytes: int) -> bytearray:
        start, end = self._start, self._end
        if end - start >= nr_bytes:
            self._start = start + nr_bytes
            return self._block[start : start + nr_bytes]
        sock = self._plain()
        if sock is None and end == start:
            return super().recv(nr_bytes)
        data = self._block[start:end]
        self._start = self._end = 0
        if sock is not None and not self._bounded:
            sock.settimeout(self.assoc.network_timeout)
            self._bounded = True
        while len(data) < nr_bytes:
            if sock is None:  # TLS since the data was buffered (not expected)
                return data + super().recv(nr_bytes - len(data))
            got = sock.recv_into(self._view, READ_BLOCK)
            if not got:  # the peer closed the connection: what there is
                return data
            take = min(got, nr_bytes - len(data))
            data += self._view[:take]
            self._start, self._end = take, got
        return data

    def close(self) -> None:
        self._start = self._end = 0
        super().close()


class BufferedAE(AE):
    """An AE whose requested associations use BufferedAssociationSocket."""

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[ssl.SSLContext, str] | None,
    ) -> AssociationSocket:
        if tls_args is not None:
            return super()._create_socket(assoc, address, tls_args)
        # called before the association (and its DUL thread) starts
        for name in _DUL_QUEUES:
            current = getattr(assoc.dul, name, None)
            if type(current) is queue.Queue and current.empty():
                setattr(assoc.dul, name, queue.SimpleQueue())
        return BufferedAssociationSocket(assoc, address=address)
