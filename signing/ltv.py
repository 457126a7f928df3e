"""Validation data for PAdES B-LT and B-LTA: trust anchors, fetched OCSP responses and CRLs.

``LtvFetcher`` owns one set of pyHanko-certvalidator fetchers (the ``requests`` backend, with a
per-request timeout) and shares it across signatures, so each OCSP response, CRL and CA certificate
is fetched once per ``cache_seconds`` instead of once per document. After that period a new set
is made, so a long-running process picks up fresh revocation data.

``[ltv]`` in qsign.toml::

    fetch_timeout = 10.0   # seconds per OCSP, CRL or certificate request
    cache_seconds = 300    # how long fetched responses are reused for further signatures
"""

from __future__ import annotations

import datetime

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import pem, x509
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.fetchers import Fetchers
from pyhanko_certvalidator.fetchers.requests_fetchers import RequestsFetcherBackend
from pyhanko_certvalidator.policy_decl import CertRevTrustPolicy, RevocationCheckingPolicy, RevocationCheckingRule

from qsign.config import Config
from qsign.errors import ConfigError, QsignError
from signing.errors import ChainNotFound

__all__ = [
    "LtvSettings",
    "LtvFetcher",
    "load_certificates",
    "trust_roots",
    "signing_validation_context",
    "tsa_trust_context",
    "offline_validation_context",
    "LOCAL_ONLY_REVOCATION_POLICY",
    "presign_validation_error",
    "async_check_signer_certificate",
    "signer_validation_error",
]

_logger = logging.getLogger(__name__)

_LTV_KEYS = {"fetch_timeout", "cache_seconds"}

#: Revocation checking from the data in hand only: every certificate that names an OCSP responder or
#: CRL must have revocation data, and nothing is fetched (validation context with allow_fetching=False).
LOCAL_ONLY_REVOCATION_POLICY = CertRevTrustPolicy(RevocationCheckingPolicy(
    ee_certificate_rule=RevocationCheckingRule.CHECK_IF_DECLARED,
    intermediate_ca_cert_rule=RevocationCheckingRule.CHECK_IF_DECLARED,
))


@dataclass(frozen=True)
class LtvSettings:
    """The ``[ltv]`` table."""

    #: Seconds per OCSP, CRL or certificate request.
    fetch_timeout: float = 10.0
    #: Seconds during which fetched responses are reused.
    cache_seconds: float = 300.0

    @classmethod
    def from_config(cls, config: Config) -> LtvSettings:
        """Parse ``[ltv]``; raise ``ConfigError`` naming the bad key."""
        table = config.section("ltv")
        unknown = sorted(set(table) - _LTV_KEYS)
        if unknown:
            raise ConfigError(detail=f"unknown key ltv.{unknown[0]} (allowed: {', '.join(sorted(_LTV_KEYS))})")
        values = {}
        for key, default in (("fetch_timeout", 10.0), ("cache_seconds", 300.0)):
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(detail=f"ltv.{key} must be a number >= 0, not {value!r}")
            values[key] = float(value)
        if values["fetch_timeout"] == 0:
            raise ConfigError(detail="ltv.fetch_timeout must be greater than 0 seconds")
        return cls(**values)


class LtvFetcher:
    """OCSP, CRL and certificate fetchers shared by the signatures of one process. Thread-safe."""

    def __init__(self, settings: LtvSettings = LtvSettings()) -> None:
        self.settings = settings
        self._backend = RequestsFetcherBackend(per_request_timeout=settings.fetch_timeout)
        self._lock = threading.Lock()
        self._fetchers: Fetchers | None = None
        self._created = 0.0

    def fetchers(self) -> Fetchers:
        """Return the current fetchers, replaced by new ones (an empty cache) every ``cache_seconds``."""
        with self._lock:
            now = time.monotonic()
            if self._fetchers is None or now - self._created >= self.settings.cache_seconds:
                self._fetchers = self._backend.get_fetchers()
                self._created = now
                _logger.debug("new revocation fetchers (timeout %.1f s)", self.settings.fetch_timeout)
            return self._fetchers


def load_certificates(paths: list[Path]) -> list[x509.Certificate]:
    """Load PEM or DER certificates; a PEM file may hold several. Raises ``ChainNotFound``."""
    certificates = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ChainNotFound(path=str(path), reason=error.strerror or type(error).__name__,
                                ids={"path": str(path)}) from error
        if pem.detect(data):
            certificates.extend(x509.Certificate.load(der) for _, _, der in pem.unarmor(data, multiple=True))
        else:
            certificates.append(x509.Certificate.load(data))
    return certificates


def trust_roots(config: Config) -> list[x509.Certificate]:
    """Return the ``[trust] anchors`` of qsign.toml; ``ConfigError`` when there are none."""
    if not config.trust_anchors:
        raise ConfigError(detail=f"no [trust] anchors in {config.path}; timestamps and LTV need trust anchors")
    return load_certificates(config.trust_anchors)


#: Clock difference accepted between the signing time and a fresh OCSP response or CRL. With pyHanko's
#: default of 1 s, B-LT signing on a loaded 2-core machine sometimes failed with "OCSP response is too
#: recent" right after the test PKI responded.
SIGNING_TIME_TOLERANCE = datetime.timedelta(minutes=2)


def signing_validation_context(config: Config, fetcher: LtvFetcher) -> ValidationContext:
    """Return a context that fetches revocation data and fails when it cannot (``hard-fail``).

    pyHanko validates the signer's certificate with it before signing and embeds what it fetched. The
    validation time is taken before the fetch, so a responder that sets ``thisUpdate`` to its own
    "now" looks newer than the validation time; ``SIGNING_TIME_TOLERANCE`` accepts that gap.
    """
    return ValidationContext(trust_roots=trust_roots(config), other_certs=load_certificates(config.intermediates),
                             allow_fetching=True, fetchers=fetcher.fetchers(), revocation_mode="hard-fail",
                             time_tolerance=SIGNING_TIME_TOLERANCE)


def tsa_trust_context(config: Config) -> ValidationContext:
    """Return a context that checks a TSA certificate's path to the trust anchors, without fetching."""
    return ValidationContext(trust_roots=trust_roots(config), other_certs=load_certificates(config.intermediates),
                             allow_fetching=False, revocation_mode="soft-fail")


def offline_validation_context(roots: list[x509.Certificate], other_certs: list[x509.Certificate] = (),
                               **kwargs) -> ValidationContext:
    """Return a context that validates with embedded revocation data only (``LOCAL_ONLY_REVOCATION_POLICY``)."""
    return ValidationContext(trust_roots=roots, other_certs=list(other_certs), allow_fetching=False,
                             revinfo_policy=LOCAL_ONLY_REVOCATION_POLICY, **kwargs)


def presign_validation_error(error: Exception, subject: str, level: str) -> Exception | None:
    """Return the qsign error for pyHanko's failed check of the signer's certificate before signing.

    pyHanko raises ``SigningError`` whose cause is a certvalidator error. Returns ``None`` when the
    cause is none of revoked, missing revocation data, or an untrusted or expired path.
    """
    return signer_validation_error(error.__cause__, subject, level)


async def async_check_signer_certificate(certificate: x509.Certificate, context: ValidationContext,
                                         subject: str, level: str) -> None:
    """Validate ``certificate``'s path and revocation status with ``context`` now, before a signature.

    Raises ``signer_revoked``, ``revocation_unavailable`` or ``signer_not_trusted``. For PAdES with a
    validation context pyHanko makes this check itself. This function serves the signatures it does not
    drive: CAdES, and bulk sealing at B-B and B-T, which checks once per worker.
    """
    from pyhanko_certvalidator import CertificateValidator
    from pyhanko_certvalidator.errors import (InsufficientRevinfoError, PathBuildingError, PathValidationError,
                                              RevokedError)

    validator = CertificateValidator(certificate, validation_context=context)
    try:
        await validator.async_validate_usage(set())
    except (RevokedError, InsufficientRevinfoError, PathValidationError, PathBuildingError) as error:
        raise signer_validation_error(error, subject, level) from error
    _logger.info("signer %s: certificate path valid and not revoked (%s)", subject, level)


def signer_validation_error(cause: BaseException | None, subject: str, level: str,
                            ids: dict[str, str] | None = None) -> QsignError | None:
    """Return ``signer_revoked``, ``revocation_unavailable`` or ``signer_not_trusted`` for a
    pyhanko-certvalidator error, or ``None`` for any other ``cause``. ``ids`` replaces ``{"signer": subject}``."""
    from pyhanko_certvalidator.errors import (InsufficientRevinfoError, PathBuildingError, PathValidationError,
                                              RevokedError)

    from signing.ltv_errors import RevocationUnavailable, SignerNotTrusted, SignerRevoked

    ids = ids if ids is not None else {"signer": subject}
    if isinstance(cause, RevokedError):
        revoked_at = cause.revocation_dt.isoformat() if cause.revocation_dt else "?"
        # The RFC 5280 reason name (key_compromise …) reads the same in both languages of the message.
        reason = cause.reason.native if cause.reason is not None else "unspecified"
        _logger.error("signer %s is revoked since %s (%s); signing refused", subject, revoked_at, reason)
        return SignerRevoked(subject=subject, revoked_at=revoked_at, reason=reason,
                             ids={**ids, "revoked_at": revoked_at})
    if isinstance(cause, InsufficientRevinfoError):
        _logger.error("no revocation data for %s: %s", subject, cause)
        return RevocationUnavailable(subject=subject, reason=str(cause), level=level, ids=ids)
    if isinstance(cause, (PathValidationError, PathBuildingError)):
        return SignerNotTrusted(subject=subject, reason=str(cause), ids=ids)
    return None
