"""The PC/SC card readers present, for the administrator's tokens page, with localizable problems.

pyscard reports problems with English text and Windows-style result codes (for example "Failed to
establish context: Service not available. (0x8010001D)" when pcscd is not running). The page shows a
message in the user's language instead, and the pyscard text goes to the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from qsign.i18n import N_

__all__ = ["ReaderList", "list_readers", "NO_PYSCARD", "NO_PCSC_SERVICE", "READERS_NOT_LISTED"]

_logger = logging.getLogger(__name__)

NO_PYSCARD = N_("The PC/SC library pyscard is not installed, so card readers cannot be listed. "
                "Install it with the pcsc extra: pip install 'qsign[pcsc]'.")
NO_PCSC_SERVICE = N_("The PC/SC service (pcscd) is not running, so card readers cannot be listed. "
                     "Start it, for example with \u201csystemctl start pcscd\u201d, and reload this page.")
READERS_NOT_LISTED = N_("The card readers could not be listed through PC/SC. Check that pcscd is running "
                        "and that the reader is plugged in, then reload this page; the agent's log has the details.")


@dataclass(frozen=True)
class ReaderList:
    """Names of the readers found, and the message id of the problem that kept them from being listed."""

    names: list[str]
    problem: str | None = None


def problem_message(error: Exception) -> str:
    """Return the message id that explains ``error`` from pyscard's ``readers()``."""
    from smartcard.pcsc.PCSCExceptions import EstablishContextException

    if isinstance(error, EstablishContextException):
        return NO_PCSC_SERVICE
    return READERS_NOT_LISTED


def list_readers() -> ReaderList:
    """List the PC/SC readers; a problem is logged with pyscard's text and returned as a message id."""
    try:
        from smartcard.System import readers
    except ImportError:
        return ReaderList([], NO_PYSCARD)
    try:
        return ReaderList([str(reader) for reader in readers()])
    except Exception as error:  # pyscard raises several types when pcscd is not running
        _logger.info("PC/SC readers not listed: %s: %s", type(error).__name__, error)
        return ReaderList([], problem_message(error))
