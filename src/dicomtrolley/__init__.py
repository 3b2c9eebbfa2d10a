"""dicomtrolley: find DICOM studies on any PACS and bring them home."""
