"""Validation data and document timestamps for bulk seals at levels B-LT and B-LTA.

The worker first writes the B-T signature along its fast path (fixed signature space, batched
digests, signature timestamp). For B-LT, ``LongTermData.extend`` then appends a second incremental
update to the signed file: the certificates, OCSP responses and CRLs of the signer and of the TSA
in the document security store (DSS) with a VRI entry for the signature. For B-LTA a third update
follows with a document timestamp, whose TSA's validation data go into the DSS as well.

The revocation data come through ``signing.levels.shared_fetcher``, so its timeouts apply and each
response is fetched once per cache period, not once per document. This runs on the ``.partial``
file, before it becomes ``.signed``, so a document that fails here is never published.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.signers.pdf_signer import PdfTimeStamper

from qsign.config import Config
from qsign.errors import QsignError
from signing.errors import SigningFailed
from signing.levels import Level, level_settings
from signing.ltv import signer_validation_error

__all__ = ["LongTermData"]

_logger = logging.getLogger(__name__)


class LongTermData:
    """Adds the B-LT validation data, and the B-LTA document timestamp, to signed files of one worker."""

    def __init__(self, level: str, config: Config, digest_algorithm: str) -> None:
        self.level = Level.parse(level)
        if not self.level.long_term:
            raise ValueError(f"level {self.level.value} has no long-term validation data")
        self.config = config
        self.digest_algorithm = digest_algorithm

    def extend(self, path: Path, *, source: str, subject: str) -> None:
        """Append the validation data (and the document timestamp) to the signed PDF at ``path``.

        ``source`` (the input) and ``subject`` (the signer) name the document in errors. Raises ``SignerRevoked``, ``RevocationUnavailable``,
        ``SignerNotTrusted``, the TSA errors, or ``SigningFailed``; the file is then left incomplete
        and must not be published.
        """
        # A fresh context per document: its validation time is now, and it contains no revocation data
        # of other documents. The fetcher behind it, with its cache, is the process's shared one.
        settings = level_settings(self.level, self.config)
        with path.open("r+b") as handle:
            try:
                reader = PdfFileReader(handle, strict=False)
                signature = reader.embedded_regular_signatures[-1]
                asyncio.run(_add_validation_info(signature, settings.validation_context))
                if self.level is Level.B_LTA:
                    handle.seek(0)
                    writer = IncrementalPdfFileWriter(handle, strict=False)
                    stamper = PdfTimeStamper(settings.timestamper)
                    asyncio.run(stamper.async_timestamp_pdf(writer, self.digest_algorithm,
                                                            settings.validation_context, in_place=True))
            except QsignError:
                raise
            except Exception as error:
                raise _validation_error(error, source, subject, self.level.value) from error
            handle.flush()
            os.fsync(handle.fileno())


async def _add_validation_info(signature, context) -> None:
    from pyhanko.sign.validation.dss import async_add_validation_info

    await async_add_validation_info(signature, context, in_place=True)


def _validation_error(error: Exception, source: str, subject: str, level: str) -> QsignError:
    """Map a certvalidator or pyHanko error met while collecting validation data to a qsign error."""
    ids = {"path": source}
    for cause in (error, error.__cause__, error.__context__):
        mapped = signer_validation_error(cause, subject, level, ids)
        if mapped is not None:
            return mapped
    _logger.warning("adding %s validation data to %s failed: %s: %s", level, source, type(error).__name__, error)
    return SigningFailed(path=source, reason=f"{level} validation data: {type(error).__name__}: {error}", ids=ids)
