"""Signature timestamps for bulk seals at level B-T, requested for a whole chunk at once.

A signature timestamp covers the signature value, so it can only be requested after the token has
signed. The signature space of every document is fixed before that (no trial signature), so it
must already hold the time-stamp token. ``SignatureTimestamps`` takes one token from the TSA when
the worker starts and reserves that token's size plus ``TOKEN_SIZE_SLACK`` bytes. A token carries
the TSA's certificate chain, which is most of its size and the same in every token. What varies
from one token to the next is the nonce, the serial number and the time with its fraction.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence

from qsign.config import Config
from qsign.errors import QsignError
from signing.levels import Level, level_settings
from signing.ltv_errors import TsaResponseInvalid
from signing.tsa import QsignTimeStamper

__all__ = ["SignatureTimestamps", "TOKEN_SIZE_SLACK"]

_logger = logging.getLogger(__name__)

#: Bytes reserved above the size of the probe token, for the fields that vary between tokens
#: (nonce, serial number, time and its fraction: together under 64 bytes) and a TSA that adds one
#: more small extension.
TOKEN_SIZE_SLACK = 256


class SignatureTimestamps:
    """The TSA client of one worker and the size reserved for its tokens."""

    def __init__(self, timestamper: QsignTimeStamper, digest_algorithm: str) -> None:
        self.timestamper = timestamper
        self.digest_algorithm = digest_algorithm
        self.max_token_size = 0

    @classmethod
    def for_level(cls, level: str, config: Config, digest_algorithm: str) -> SignatureTimestamps | None:
        """Return the timestamps of ``level`` from the ``[tsa]`` table, or ``None`` for B-B.

        Raises ``TsaNotConfigured``, and ``TsaUnavailable`` or ``TsaResponseInvalid`` from the probe.
        """
        settings = level_settings(Level.parse(level), config)
        if settings.timestamper is None:
            return None
        timestamps = cls(settings.timestamper, digest_algorithm)
        timestamps.probe()
        return timestamps

    def probe(self) -> int:
        """Take one token over a fixed value and set ``max_token_size`` from its size; return that size."""
        imprint = hashlib.new(self.digest_algorithm, b"qsign bulk TSA probe").digest()
        token = asyncio.run(self.timestamper.async_timestamp(imprint, self.digest_algorithm))
        size = len(token.dump())
        self.max_token_size = size + TOKEN_SIZE_SLACK
        _logger.info("TSA %s: probe token of %d bytes; reserving %d bytes per token", self.timestamper.url, size,
                     self.max_token_size)
        return size

    def stamp(self, signatures: Sequence[bytes]) -> list[bytes | QsignError]:
        """Return, for each signature value, the DER of its time-stamp token or the error that stopped it.

        The requests of one call run concurrently. A token larger than ``max_token_size`` is returned
        as an error, because it would not fit the reserved signature space.
        """
        async def stamp_one(signature: bytes) -> bytes | QsignError:
            imprint = hashlib.new(self.digest_algorithm, signature).digest()
            try:
                token = (await self.timestamper.async_timestamp(imprint, self.digest_algorithm)).dump()
            except QsignError as error:
                return error
            if len(token) > self.max_token_size:
                return _token_too_large(self.timestamper.url, len(token), self.max_token_size)
            return token

        async def stamp_all() -> list[bytes | QsignError]:
            return list(await asyncio.gather(*(stamp_one(signature) for signature in signatures)))

        return asyncio.run(stamp_all())


def _token_too_large(url: str, size: int, reserved: int) -> QsignError:
    return TsaResponseInvalid(url=url, reason=f"time-stamp token of {size} bytes; {reserved} bytes were reserved",
                              ids={"url": url})
