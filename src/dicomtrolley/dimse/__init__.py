"""DIMSE networking for DICOM query/retrieve (PS3.4 annex C, PS3.7, PS3.8).

The public face is :mod:`dicomtrolley.dicom_qr`; this package holds the parts:

==================  ==============================================================
``settings``        :class:`Peer` and :class:`DIMSETimeouts`: value objects
``errors``          the DIMSE exception tree and what a status means
``contexts``        presentation contexts, SCP/SCU roles, query/retrieve models
``associations``    opening associations, the timeout Watchdog, error mapping
``find``            C-FIND, and searching level by level (hierarchical)
``retrieve``        what C-GET and C-MOVE share: requests, the C-STORE receiver,
                    checking what arrived against what the PACS reported
``sessions``        associations reused for many C-GET/C-MOVE requests, per worker
``get``             C-GET
``move``            C-MOVE
``resume``          asking again, on a new association, for what a broken
                    C-GET or C-MOVE did not deliver (Retry policy)
``storage_scp``     the storage SCP that receives C-MOVE sub-operations
``memory``          datasets in memory from a retrieve in a background thread
==================  ==============================================================
"""

from dicomtrolley.dimse.settings import DIMSETimeouts, Peer

__all__ = ["DIMSETimeouts", "Peer"]
