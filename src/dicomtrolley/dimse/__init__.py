"""DIMSE networking for DICOM query/retrieve (PS3.4 annex C, PS3.7, PS3.8).

The public face is :mod:`dicomtrolley.dicom_qr`; this package holds the parts:

==================  ==============================================================
``settings``        :class:`Peer` and :class:`DIMSETimeouts`: value objects
``errors``          the DIMSE exception tree and what a status means
``contexts``        presentation contexts and roles: proposed (C-GET's storage
                    contexts with the SCP role), required, and accepted by the
                    storage SCP
``link``            one association on a socket, driven from the calling thread:
                    requestor (:meth:`Link.connect`) and acceptor
                    (:meth:`Link.accept`), with the connect/idle/total timeouts
``messages``        DIMSE messages out of a link's P-DATA fragments (C-FIND)
``find``            C-FIND, and searching level by level (hierarchical)
``echo``            C-ECHO
``retrieve``        what C-GET and C-MOVE share: requests, the one Receiver
                    entry point, checking what arrived against what the PACS
                    reported
``incoming``        C-STORE requests on a link into temporary files, through the
                    Receiver, answered (C-GET's association, the storage SCP)
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

No pynetdicom association runs here. The acceptor side of ``link`` uses our
own A-ASSOCIATE codec and negotiation (:mod:`dicomtrolley.formats.association`,
:mod:`dicomtrolley.formats.negotiation`); pynetdicom's public classes remain
for the requestor's A-ASSOCIATE PDUs, presentation context objects and status
tables.
"""

from dicomtrolley.dimse.settings import DIMSETimeouts, Peer

__all__ = ["DIMSETimeouts", "Peer"]
