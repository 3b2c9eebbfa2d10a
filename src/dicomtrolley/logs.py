"""Logging under one root logger named ``trolley`` (as in dicomtrolley 4.1.0).

dicomtrolley never configures handlers itself; applications do. Credentials are
never logged: URLs pass through :func:`dicomtrolley.exceptions.redact_url` and
request headers are not logged at all.
"""

from __future__ import annotations

import logging

ROOT_LOGGER_NAME = "trolley"


def get_module_logger(name: str) -> logging.Logger:
    """The logger for one module: ``trolley.<name>``."""
    return logging.getLogger(f"{ROOT_LOGGER_NAME}.{name}")
