"""The plug-in point of the emulator: a :class:`Service` serves one protocol.

A service may add HTTP routes (MINT, WADO-URI, DICOMweb, RAD-69 at
``/rad69``), run a listener of its own (later a DIMSE service: a pynetdicom AE on
another port), or both. All of them answer from the emulator's one
:class:`~dicomtrolley.emulator.index.DicomIndex`.

Lifecycle, driven by :class:`~dicomtrolley.emulator.Emulator`:

1. ``start(emulator)``: after the HTTP socket is bound (so ``emulator.base_url``
   is known) and before any request is served. Keep the emulator, open sockets.
2. ``routes()``: the HTTP routes, asked once after ``start``.
3. ``stop()``: when the emulator stops, in reverse order of starting.

A new protocol is one module with a Service subclass, added to
:func:`~dicomtrolley.emulator.default_services` (or passed in
``Emulator(services=[...])``)::

    class Rad69Service(Service):
        name = "rad69"

        def routes(self) -> list[Route]:
            return [Route("POST", "/rad69", self.retrieve, basic_challenge=True)]

        def retrieve(self, request: Request) -> Response:
            instance = self.emulator.index.instance(...)
            ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dicomtrolley.emulator.server import Route

if TYPE_CHECKING:
    from dicomtrolley.emulator.app import Emulator


class Service:
    """Base class of the protocols the emulator serves; every hook is optional."""

    #: A short name for logs and listings.
    name = "service"

    _emulator: Emulator | None = None

    @property
    def emulator(self) -> Emulator:
        """The emulator this service was started by."""
        if self._emulator is None:
            raise RuntimeError(f"service {self.name} has not been started")
        return self._emulator

    def start(self, emulator: Emulator) -> None:
        """Called before requests are served; the default keeps the emulator."""
        self._emulator = emulator

    def routes(self) -> Sequence[Route]:
        """The HTTP routes of this service (none by default)."""
        return ()

    def stop(self) -> None:
        """Called when the emulator stops; the default forgets the emulator."""
        self._emulator = None
