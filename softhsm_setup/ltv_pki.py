"""The long-term-validation side of the test PKI: service URLs and revocations.

Certificates that certomancer issues from ``pki/certomancer.yml`` carry an authority information
access extension (OCSP responder and CA issuers) and a CRL distribution point, under one base URL on
127.0.0.1 that ``qsign softhsm serve-pki`` serves with certomancer's animator. The paths below the
base URL are certomancer's: ``/<architecture>/<service>/<label>``.

A certificate is revoked by writing a ``revocation`` entry into its specification in
``pki/certomancer.yml``. The running animator reloads the file when it changes, so the OCSP
responder reports the revocation from its next response on.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

from qsign.errors import ConfigError
from softhsm_setup.errors import PkiIncomplete
from softhsm_setup.layout import StateLayout

__all__ = [
    "ARCHITECTURE",
    "DEFAULT_PKI_BASE_URL",
    "PkiUrls",
    "Revocation",
    "REVOCATION_REASONS",
    "revoke_certificate",
]

_logger = logging.getLogger(__name__)

#: Where ``qsign softhsm serve-pki`` listens unless ``[pki] base_url`` says otherwise.
DEFAULT_PKI_BASE_URL = "http://127.0.0.1:8471"

#: The label of the PKI architecture in ``softhsm_setup/certomancer.yml``, the first path segment of every URL.
ARCHITECTURE = "qsign-test"

#: CRL reason codes accepted by ``revoke_certificate`` (RFC 5280 names, as asn1crypto spells them).
REVOCATION_REASONS = ("unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
                      "cessation_of_operation", "certificate_hold")


@dataclass(frozen=True)
class PkiUrls:
    """The URLs of the test PKI's services under one base URL (``http://127.0.0.1:PORT``).

    Service labels are ``root`` and ``intermediate`` for the two CAs and ``tsa`` for the TSA, as
    ``softhsm_setup/certomancer.yml`` names them.
    """

    base_url: str

    @classmethod
    def parse(cls, base_url: str) -> PkiUrls:
        """Check that ``base_url`` is an http(s) URL with a host and return it without a trailing slash."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigError(detail=f"pki.base_url must be an http URL such as {DEFAULT_PKI_BASE_URL}, "
                                     f"not {base_url!r}")
        return cls(base_url.rstrip("/"))

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    def ocsp_url(self, ca_name: str) -> str:
        return f"{self.base_url}/{ARCHITECTURE}/ocsp/{ca_name}"

    def crl_url(self, ca_name: str) -> str:
        return f"{self.base_url}/{ARCHITECTURE}/crls/{ca_name}/latest.crl"

    def ca_issuers_url(self, ca_name: str) -> str:
        return f"{self.base_url}/{ARCHITECTURE}/certs/{ca_name}/ca.crt"

    @property
    def tsa_url(self) -> str:
        return f"{self.base_url}/{ARCHITECTURE}/tsa/tsa"


@dataclass(frozen=True)
class Revocation:
    """A certificate of the test PKI that its CA considers revoked."""

    #: The certificate's label in ``pki/certomancer.yml``.
    label: str
    serial_number: int
    revoked_at: datetime.datetime
    #: One of ``REVOCATION_REASONS``.
    reason: str


def revoke_certificate(layout: StateLayout, certificate: x509.Certificate, *,
                       revoked_at: datetime.datetime | None = None, reason: str = "key_compromise") -> Revocation:
    """Mark ``certificate`` revoked in ``pki/certomancer.yml``; a running animator reports it at once.

    Raises ``PkiIncomplete`` when the configuration issued no certificate with that serial number.
    """
    from softhsm_setup.pki import load_rendered_config, write_rendered_config

    if reason not in REVOCATION_REASONS:
        raise ValueError(f"unknown revocation reason {reason!r}; use one of {', '.join(REVOCATION_REASONS)}")
    revoked_at = (revoked_at or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)

    config = load_rendered_config(layout)
    specifications = config["pki-architectures"][ARCHITECTURE]["certs"] if config else {}
    labels = [label for label, spec in specifications.items() if spec.get("serial") == certificate.serial_number]
    if len(labels) != 1:
        raise PkiIncomplete(pki_dir=layout.pki_dir,
                            detail=f"{layout.certomancer_config.name} issued no certificate with serial number "
                                   f"{certificate.serial_number:x}",
                            ids={"file": str(layout.certomancer_config)})
    specifications[labels[0]]["revocation"] = {
        "revoked-since": revoked_at.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+0000"),
        "reason": reason,
    }
    write_rendered_config(layout, config)
    _logger.info("revoked certificate %s (serial %x) at %s (%s)", labels[0], certificate.serial_number,
                 revoked_at.isoformat(), reason)
    return Revocation(label=labels[0], serial_number=certificate.serial_number, revoked_at=revoked_at, reason=reason)
