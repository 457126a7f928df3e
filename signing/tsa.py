"""RFC 3161 time-stamp client: pyHanko's ``HTTPTimeStamper`` with retries, response checks and TSA trust.

``QsignTimeStamper`` is a pyHanko ``TimeStamper``, so it serves signature timestamps (PAdES and
CAdES B-T) and document timestamps (PAdES B-LTA) alike. Every response is checked before pyHanko
embeds it: status granted, the nonce of the request, the message imprint (hash algorithm and value),
and a certificate path from the TSA certificate to a trust anchor with the extended key usage
timeStamping. A failed check raises ``TsaResponseInvalid``; a TSA that cannot be reached after the
retries raises ``TsaUnavailable``. Neither is ever turned into a signature without a timestamp.

``[tsa]`` in qsign.toml (every key but ``url`` optional)::

    url = "http://127.0.0.1:8471/tsa"
    hash_algorithm = "sha256"     # document timestamps (B-LTA); see the NOTE in async_timestamp
    timeout = 10.0                # seconds per attempt
    retries = 2                   # attempts after the first one, for connection errors and HTTP 5xx
    backoff = 0.5                 # seconds before the first retry, doubled before each further one
    username = "..."              # HTTP basic auth; the password comes from the variable password_env
    password_env = "QSIGN_TSA_PASSWORD"
    client_certificate = "..."    # TLS client certificate and key (PEM) for an https TSA
    client_key = "..."
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from asn1crypto import cms, tsp
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError, set_tsp_headers
from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
from pyhanko_certvalidator import ValidationContext

from qsign.config import Config
from qsign.errors import ConfigError
from signing.ltv_errors import TsaResponseInvalid, TsaUnavailable

__all__ = ["TsaSettings", "QsignTimeStamper", "TSA_HASH_ALGORITHMS"]

_logger = logging.getLogger(__name__)

TSA_HASH_ALGORITHMS = ("sha256", "sha384", "sha512")
_TSA_KEYS = {"url", "hash_algorithm", "timeout", "retries", "backoff", "username", "password_env",
             "client_certificate", "client_key"}


@dataclass(frozen=True)
class TsaSettings:
    """The ``[tsa]`` table: where the TSA is and how to talk to it."""

    url: str
    hash_algorithm: str = "sha256"
    #: Seconds per attempt.
    timeout: float = 10.0
    #: Attempts after the first one.
    retries: int = 2
    #: Seconds before the first retry; doubled before each further retry.
    backoff: float = 0.5
    username: str | None = None
    #: Name of the environment variable that holds the basic-auth password.
    password_env: str | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None

    @classmethod
    def from_config(cls, config: Config, table: dict[str, Any] | None = None) -> TsaSettings | None:
        """Parse ``[tsa]`` (or ``table``, such as a profile's own ``tsa``); ``None`` when it has no url.

        Raises ``ConfigError`` naming the bad key.
        """
        table = config.section("tsa") if table is None else table
        unknown = sorted(set(table) - _TSA_KEYS)
        if unknown:
            raise ConfigError(detail=f"unknown key tsa.{unknown[0]} (allowed: {', '.join(sorted(_TSA_KEYS))})")
        url = table.get("url")
        if not url:
            return None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(detail=f"tsa.url must be an http or https URL, not {url!r}")

        hash_algorithm = table.get("hash_algorithm", "sha256")
        if hash_algorithm not in TSA_HASH_ALGORITHMS:
            raise ConfigError(detail=f"tsa.hash_algorithm must be one of {', '.join(TSA_HASH_ALGORITHMS)}, "
                                     f"not {hash_algorithm!r}")
        numbers = {}
        for key, kind, default in (("timeout", float, 10.0), ("retries", int, 2), ("backoff", float, 0.5)):
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(detail=f"tsa.{key} must be a number >= 0, not {value!r}")
            numbers[key] = kind(value)
        if numbers["timeout"] == 0:
            raise ConfigError(detail="tsa.timeout must be greater than 0 seconds")

        certificate, key = table.get("client_certificate"), table.get("client_key")
        if (certificate is None) != (key is None):
            raise ConfigError(detail="tsa.client_certificate and tsa.client_key must be given together")
        return cls(url=url, hash_algorithm=hash_algorithm, username=table.get("username"),
                   password_env=table.get("password_env"),
                   client_certificate=config.resolve(certificate) if certificate else None,
                   client_key=config.resolve(key) if key else None, **numbers)


class _RetryableError(Exception):
    """A failed attempt that another attempt may fix: connection error, timeout, HTTP 5xx."""


class QsignTimeStamper(HTTPTimeStamper):
    """pyHanko time-stamp client with retries and checked responses.

    ``trust_context`` is the validation context the TSA certificate must chain to; without one the
    TSA is not checked for trust (only nonce and imprint).
    """

    def __init__(self, settings: TsaSettings, trust_context: ValidationContext | None) -> None:
        auth = None
        if settings.username:
            password = os.environ.get(settings.password_env or "", "")
            auth = aiohttp.BasicAuth(settings.username, password)
        super().__init__(settings.url, timeout=settings.timeout, auth=auth)
        self.settings = settings
        self.trust_context = trust_context

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.settings.client_certificate is None:
            return None
        context = ssl.create_default_context()
        context.load_cert_chain(self.settings.client_certificate, self.settings.client_key)
        return context

    async def _post(self, request: tsp.TimeStampReq) -> tsp.TimeStampResp:
        """Send one request; raise ``_RetryableError`` or ``TsaResponseInvalid``."""
        headers = set_tsp_headers(dict(self.headers or {}))
        connector = aiohttp.TCPConnector(ssl=self._ssl_context() or True)
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                async with session.post(self.url, data=request.dump(), headers=headers, auth=self.auth) as response:
                    body = await response.read()
                    status, content_type = response.status, response.headers.get("Content-Type", "")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise _RetryableError(str(error) or type(error).__name__) from error

        if status >= 500:
            raise _RetryableError(f"HTTP status {status}")
        if status != 200:
            raise TsaResponseInvalid(url=self.url, reason=f"HTTP status {status}", ids={"url": self.url})
        if content_type.split(";")[0].strip() != "application/timestamp-reply":
            raise TsaResponseInvalid(url=self.url, reason=f"content type {content_type!r}, "
                                                          f"expected application/timestamp-reply",
                                     ids={"url": self.url})
        try:
            response_object = tsp.TimeStampResp.load(body)
            response_object.native  # parse it all here, so a truncated response is reported here
        except ValueError as error:
            raise TsaResponseInvalid(url=self.url, reason=f"not a TimeStampResp ({error})",
                                     ids={"url": self.url}) from error
        return response_object

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        """Send ``req`` with retries and back-off; raise ``TsaUnavailable`` when every attempt failed."""
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._post(req)
            except _RetryableError as error:
                if attempt == attempts:
                    _logger.error("TSA %s failed %d times, last error: %s", self.url, attempts, error)
                    raise TsaUnavailable(url=self.url, attempts=attempts, reason=str(error),
                                         ids={"url": self.url}) from error
                delay = self.settings.backoff * 2 ** (attempt - 1)
                _logger.warning("TSA %s attempt %d of %d failed (%s); retrying in %.1f s", self.url, attempt,
                                attempts, error, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        """Request a time-stamp token for ``message_digest`` and return it after checking it.

        NOTE: pyHanko passes the digest of the signature value for a signature timestamp, computed
        with the signature's digest algorithm, so ``hash_algorithm`` only applies where qsign chooses
        the algorithm itself (document timestamps).
        """
        nonce, request = self.request_cms(message_digest, md_algorithm)
        try:
            response = await self.async_request_tsa_response(request)
        except TimestampRequestError as error:  # raised by subclasses that keep pyHanko's transport
            raise TsaUnavailable(url=self.url, attempts=1, reason=str(error), ids={"url": self.url}) from error

        token = self._check_response(response, nonce, message_digest, md_algorithm)
        await self._check_trust(token, lambda algorithm: message_digest)
        _logger.info("time-stamp token from %s (%s)", self.url, md_algorithm)
        return token

    def _invalid(self, reason: str) -> TsaResponseInvalid:
        _logger.error("TSA %s: invalid response: %s", self.url, reason)
        return TsaResponseInvalid(url=self.url, reason=reason, ids={"url": self.url})

    def _check_response(self, response: tsp.TimeStampResp, nonce: int | None, message_digest: bytes,
                        md_algorithm: str) -> cms.ContentInfo:
        status = response["status"]
        if status["status"].native not in ("granted", "granted_with_mods"):
            text = "; ".join(status["status_string"].native or []) or "no status text"
            raise self._invalid(f"request rejected with status {status['status'].native} ({text})")

        token = response["time_stamp_token"]
        try:
            tst_info = token["content"]["encap_content_info"]["content"].parsed
        except (KeyError, ValueError, AttributeError) as error:
            raise self._invalid(f"no TSTInfo in the token ({error})") from error
        if not isinstance(tst_info, tsp.TSTInfo):
            raise self._invalid("the token does not contain a TSTInfo")

        received_nonce = tst_info["nonce"].native
        if nonce is not None and received_nonce != nonce:
            raise self._invalid(f"nonce mismatch: sent {nonce}, received {received_nonce}")

        imprint = tst_info["message_imprint"]
        algorithm = imprint["hash_algorithm"]["algorithm"].native
        if algorithm != md_algorithm:
            raise self._invalid(f"message imprint uses {algorithm}, requested {md_algorithm}")
        if imprint["hashed_message"].native != message_digest:
            raise self._invalid("message imprint does not match the data sent for timestamping")
        return token

    async def _check_trust(self, token: cms.ContentInfo, expected_imprint: Callable[[str], bytes]) -> None:
        """Check the token's signature and that its TSA certificate chains to a trust anchor."""
        if self.trust_context is None:
            return
        try:
            status = await validate_tst_signed_data(token["content"], self.trust_context, expected_imprint)
        except Exception as error:  # pyHanko raises several unrelated types for malformed tokens
            raise self._invalid(f"the token cannot be validated ({error})") from error
        if not (status.get("intact") and status.get("valid")):
            raise self._invalid("the token's signature does not verify")
        # pyHanko's TimestampSignatureStatus derives "trusted" from these two fields.
        if status.get("validation_path") is None or status.get("trust_problem_indic") is not None:
            raise self._invalid("the TSA certificate does not chain to a trust anchor with the "
                                "timeStamping extended key usage")
