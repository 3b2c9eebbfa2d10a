"""DIMSE networking for DICOM query/retrieve (PS3.4 annex C, PS3.7, PS3.8).

The public face is :mod:`dicomtrolley.dicom_qr`; this package holds the parts:

==================  ==============================================================
``settings``        :class:`Peer` and :class:`DIMSETimeouts`: value objects
``errors``          the DIMSE exception tree and what a status means
``contexts``        presentation contexts to propose (:class:`~dicomtrolley.dimse.
                    contexts.Proposal`: C-GET's storage contexts, the SCP roles
                    for them), required, and accepted by the storage SCP
``link``            one association on a socket, driven from the calling thread:
                    requestor (:meth:`Link.connect`) and acceptor
                    (:meth:`Link.accept`); connect, idle and total timeouts and
                    ``cancelled()`` checked between short waits (connecting
                    included)
``tls``             DICOM over TLS: certificates, CAs, the handshake in slices
``trace``           what ``debug=True`` logs: PDUs, negotiated contexts, DIMSE
                    commands and statuses (no data set, no credentials)
``messages``        DIMSE messages out of a link's P-DATA fragments; identifiers
                    as bytes (C-FIND, C-ECHO)
``find``            C-FIND (hierarchical and relational, C-CANCEL on stopping)
``echo``            C-ECHO
``retrieve``        what C-GET and C-MOVE share: requests, the one Receiver,
                    checking what arrived against what the PACS reported
``incoming``        C-STORE requests on a link into temporary files (checked and
                    checksummed as they are written), through the Receiver,
                    answered (C-GET's association, the storage SCP)
``sessions``        C-GET/C-MOVE requests and their responses over a link kept
                    open between requests, one per worker thread; stopping on
                    Ctrl-C
``get``             C-GET
``move``            C-MOVE
``storage_scp``     the storage SCP that receives C-MOVE sub-operations
``resume``          asking again, on a new association, for what a broken
                    C-GET or C-MOVE did not deliver (Retry policy)
``memory``          datasets in memory from a retrieve in a background thread
==================  ==============================================================

Every association, either side, runs on our own sans-I/O codec: A-ASSOCIATE
PDUs in :mod:`dicomtrolley.formats.association`, negotiation in
:mod:`dicomtrolley.formats.negotiation`, the rest of the upper layer and the
command sets in :mod:`dicomtrolley.formats.dul` and
:mod:`dicomtrolley.formats.dimse_commands`. No third-party DICOM network
stack runs here (the emulator's SCP uses one).
"""

from dicomtrolley.dimse.settings import DIMSETimeouts, Peer

__all__ = ["DIMSETimeouts", "Peer"]
