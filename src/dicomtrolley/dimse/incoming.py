"""C-STORE requests received on a :class:`~dicomtrolley.dimse.link.Link`.

Instances reach us as C-STORE requests (PS3.4 B.2, PS3.7 9.1.1) in two places:
on our own C-GET association, and on the associations a PACS opens to the
storage SCP for the sub-operations of a C-MOVE. Both go through a
:class:`StoreIntake`: each data set is written, fragment by fragment as it
arrives (straight from the link's read buffer), behind a Part 10 file header
into a temporary file in the spool folder (the output folder, so that the
final rename stays on one file system), handed to the one
:class:`~dicomtrolley.dimse.retrieve.Receiver` entry point
(:meth:`~dicomtrolley.dimse.retrieve.Receiver.store`: verified, indexed,
renamed into place) and answered with the status it gives. An instance that
no request of ours waits for is read to its end, thrown away and refused.

What the storage needs of the file is gathered while it is written, since the
PACS sends nothing more until it has our response: its CRC-32 and the walk of
its data set (:class:`~dicomtrolley.storage.StreamCheck`), so that the storage
takes the file as it is (:meth:`~dicomtrolley.storage.DICOMDiskStorage.
open_writer` with ``received``) without reading it again; and the next
instance's temporary file is made right after each response, while the PACS
gets that instance ready.

When what arrives must not be written as it came (the output folder's storage
de-identifies: :func:`~dicomtrolley.storage.memory_limit_for`), the data set
goes into anonymous memory instead (a Linux memfd, gone with the process),
at most the storage's memory limit; the storage then writes only the changed
data set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from dicomtrolley.dimse.errors import DIMSEError
from dicomtrolley.dimse.link import Link
from dicomtrolley.dimse.retrieve import (
    STATUS_OUT_OF_RESOURCES,
    Received,
    Receiver,
    Tally,
)
from dicomtrolley.exceptions import DICOMTrolleyError, StorageError
from dicomtrolley.formats import dimse_commands, dul
from dicomtrolley.formats.part10 import file_header
from dicomtrolley.logs import get_module_logger
from dicomtrolley.storage import (
    MEMORY_LIMIT_ENV,
    InstanceTooLargeError,
    StreamCheck,
    memory_limit_for,
    new_temp_file,
)

logger = get_module_logger("dimse")

Command = dict[int, dul.CommandValue]
#: Smaller writes are gathered up to this size; a larger fragment (a PDU of
#: our maximum length, 128 KiB) is written straight from the link's buffer.
WRITE_BUFFER = 1 << 16
Route = Callable[[Command], Tally | None]
"""Which request a C-STORE request belongs to (None: none of ours)."""


class CommandAssembler:
    """Command sets out of their fragments (a command may span several PDUs)."""

    def __init__(self) -> None:
        self._pieces = bytearray()

    def feed(self, fragment: dul.Fragment) -> Command | None:
        """The command once its last fragment came (raises DULProtocolError)."""
        self._pieces += fragment.data
        if not fragment.last:
            return None
        try:
            return dul.decode_command(self._pieces)
        finally:
            self._pieces = bytearray()


class _Incoming:
    """One C-STORE data set on its way into a temporary file (or memory)."""

    def __init__(
        self,
        command: Command,
        new_file: Callable[[], tuple[int, Path]],
        header: bytes,
        limit: int | None,
    ) -> None:
        self.command = command
        self.sop_uid = dul.command_str(command, dul.AFFECTED_SOP_INSTANCE_UID)
        self.path: Path | None = None
        self.error: BaseException | None = None
        self._file: IO[bytes] | None = None
        self._memfd: int | None = None
        self._limit = limit
        self._size = 0
        #: CRC-32 and walk of a file on disk as it is written (the storage
        #: then need not read it back); None in memory
        self.check: StreamCheck | None = None
        try:
            if self._limit is None:
                fd, self.path = new_file()
                self.check = StreamCheck()
            else:
                fd = self._memory_file()
            self._file = os.fdopen(fd, "wb", buffering=WRITE_BUFFER)
            self.write(header)
        except (OSError, DICOMTrolleyError) as error:
            self._fail(error)

    def _memory_file(self) -> int:
        """A descriptor to write the data set into anonymous memory; path
        names the memory for whoever takes the file (Linux: memfd)."""
        create = getattr(os, "memfd_create", None)
        if create is None or not Path("/proc/self/fd").is_dir():
            raise StorageError(
                f"cannot receive instance {self.sop_uid} in memory for the "
                "storage's transform: C-GET and C-MOVE need Linux (memfd) for "
                "that",
                uids=[self.sop_uid],
            )
        self._memfd = create("dicomtrolley-instance", os.MFD_CLOEXEC)
        self.path = Path(f"/proc/self/fd/{self._memfd}")
        return os.dup(self._memfd)

    def write(self, data: bytes | memoryview) -> None:
        if self._file is None:
            return
        self._size += len(data)
        if self.check is not None:
            self.check.feed(data)
        elif self._limit is not None and self._size > self._limit:
            self._fail(
                InstanceTooLargeError(
                    f"instance {self.sop_uid} is larger than {self._limit} bytes, "
                    "the most a transform (e.g. --deidentify) holds in memory: "
                    f"raise {MEMORY_LIMIT_ENV} or the storage's memory_limit",
                    uids=[self.sop_uid],
                )
            )
            return
        try:
            self._file.write(data)
        except OSError as error:
            self._fail(error)

    def finish(self) -> Received:
        """The complete file (raises StorageError when it could not be written)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError as error:
                self._fail(error)
            self._file = None
        if isinstance(self.error, DICOMTrolleyError):
            raise self.error
        if self.error is not None or self.path is None:
            raise StorageError(
                f"cannot write received instance {self.sop_uid}: {self.error}",
                uids=[self.sop_uid],
            )
        return Received(self.path, self.check)

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._memfd is not None:
            os.close(self._memfd)  # the memory is freed with its last descriptor
            self._memfd = None
        elif self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self.discard()
        self.path = None


class StoreIntake:
    """The C-STORE requests of one association: files, statuses, responses.

    Call :meth:`start` with each C-STORE request command, :meth:`data` with
    every data fragment, and :meth:`discard` when the association ends.
    """

    def __init__(
        self, link: Link, receiver: Receiver, spool: Path, route: Route
    ) -> None:
        self.link = link
        self.receiver = receiver
        self.spool = spool
        self.route = route
        self.incoming: _Incoming | None = None
        self.tally: Tally | None = None
        self.context_id = 0
        self.refusing = False  # reading a data set nobody waits for
        self._refused: Command = {}
        #: whether (and how much) to receive in memory, asked once per intake
        #: (the storage's transform is set for the whole download)
        self._limit = memory_limit_for(spool)
        #: the temporary file for the next instance, made while the peer
        #: gets it ready (creating a file costs a tenth of a millisecond or
        #: more, and the peer waits for nothing else once the data is here)
        self._spare: tuple[int, Path] | None = None

    @property
    def busy(self) -> bool:
        """True between a C-STORE request and the end of its data set."""
        return self.incoming is not None or self.refusing

    def start(self, command: Command, context_id: int) -> None:
        if self.busy:
            raise self._protocol("a command arrived before the data set it follows")
        context = self.link.contexts.get(context_id)
        if context is None or not dul.has_dataset(command):
            raise self._protocol(
                f"C-STORE request on unknown context {context_id} or without data"
            )
        self.context_id = context_id
        self.tally = self.route(command)
        if self.tally is None:
            self.refusing = True
            self._refused = command
            return
        header = file_header(
            dul.command_str(command, dul.AFFECTED_SOP_CLASS_UID),
            dul.command_str(command, dul.AFFECTED_SOP_INSTANCE_UID),
            context.transfer_syntax,
            self.link.peer.aec,
        )
        self.incoming = _Incoming(command, self._new_file, header, self._limit)

    def _new_file(self) -> tuple[int, Path]:
        spare, self._spare = self._spare, None
        return new_temp_file(self.spool) if spare is None else spare

    def _prepare(self) -> None:
        """Make the next instance's temporary file now (on disk only)."""
        if self._limit is None and self._spare is None:
            # on failure: tried again when an instance comes, and reported then
            with contextlib.suppress(OSError):
                self._spare = new_temp_file(self.spool)

    def data(self, fragment: dul.Fragment) -> None:
        if not self.busy or fragment.context_id != self.context_id:
            raise self._protocol("a data set arrived without its command")
        if self.refusing:
            if fragment.last:
                self.refusing = False
                self._refuse(self._refused)
            return
        incoming = self.incoming
        assert incoming is not None and self.tally is not None
        incoming.write(fragment.data)
        if not fragment.last:
            return
        self.incoming = None
        try:
            status = self.receiver.store(incoming.sop_uid, self.tally, incoming.finish)
        finally:
            incoming.discard()  # the receiver took the file (a memfd: freed here)
        logger.debug("C-STORE of %s: status 0x%04X", incoming.sop_uid, status)
        self._respond(incoming.command, status)
        self._prepare()

    def discard(self) -> None:
        """Throw away an instance cut off by the end of the association (and
        the file made for the next one)."""
        if self.incoming is not None:
            self.incoming.discard()
            self.incoming = None
        self.refusing = False
        spare, self._spare = self._spare, None
        if spare is not None:
            fd, path = spare
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def _refuse(self, command: Command) -> None:
        logger.warning(
            "refused C-STORE of %s from %s: no request of ours waits for it",
            dul.command_str(command, dul.AFFECTED_SOP_INSTANCE_UID) or "?",
            self.link.peer,
        )
        self._respond(command, STATUS_OUT_OF_RESOURCES)

    def _respond(self, command: Command, status: int) -> None:
        response = dimse_commands.c_store_rsp(
            dul.command_int(command, dul.MESSAGE_ID),
            dul.command_str(command, dul.AFFECTED_SOP_CLASS_UID),
            dul.command_str(command, dul.AFFECTED_SOP_INSTANCE_UID),
            status,
        )
        self.link.send(self.context_id, response, None)

    def _protocol(self, message: str) -> DIMSEError:
        return self.link.fail(f"protocol error: {message}")
