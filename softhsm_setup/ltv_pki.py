"""The long-term-validation parts of the test PKI: service URLs, the TSA certificate, revocations.

Certificates that init issues carry an authority information access extension (OCSP responder and
CA issuers) and a CRL distribution point, all under one base URL on 127.0.0.1 that
``qsign softhsm serve-pki`` serves. The TSA key is a software key in ``pki/tsa.key.pem``; its
certificate ``pki/tsa.pem`` is issued by the intermediate CA with the critical extended key usage
timeStamping that RFC 3161 requires. Revoked certificates are listed in ``pki/revoked.json``, which
the OCSP responder and the CRLs read on every request.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from qsign.errors import ConfigError
from softhsm_setup.errors import PkiIncomplete
from softhsm_setup.files import Status, write_file
from softhsm_setup.layout import StateLayout
from softhsm_setup.specs import CERTIFICATE_ORGANIZATION

__all__ = [
    "DEFAULT_PKI_BASE_URL",
    "PkiUrls",
    "Revocation",
    "REVOCATION_REASONS",
    "revocation_extensions",
    "load_or_create_tsa",
    "tsa_certificate_path",
    "tsa_key_path",
    "revocations_path",
    "read_revocations",
    "revoke_certificate",
]

_logger = logging.getLogger(__name__)

#: Where ``qsign softhsm serve-pki`` listens unless ``[pki] base_url`` says otherwise.
DEFAULT_PKI_BASE_URL = "http://127.0.0.1:8471"

TSA_COMMON_NAME = "qsign 测试时间戳服务"
_TSA_KEY_BITS = 2048
_TSA_VALIDITY = datetime.timedelta(days=1826)
_BACKDATE = datetime.timedelta(minutes=5)

#: CRL reason codes accepted by ``revoke_certificate`` (RFC 5280 names, as asn1crypto spells them).
REVOCATION_REASONS = ("unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
                      "cessation_of_operation", "certificate_hold")


@dataclass(frozen=True)
class PkiUrls:
    """The URLs of the test PKI's services under one base URL (``http://127.0.0.1:PORT``).

    CA names are ``root`` and ``intermediate``, the stems of ``pki/<name>-ca.pem``.
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
        return f"{self.base_url}/ocsp/{ca_name}"

    def crl_url(self, ca_name: str) -> str:
        return f"{self.base_url}/crl/{ca_name}.crl"

    def ca_issuers_url(self, ca_name: str) -> str:
        return f"{self.base_url}/certs/{ca_name}-ca.cer"

    @property
    def tsa_url(self) -> str:
        return f"{self.base_url}/tsa"


def revocation_extensions(urls: PkiUrls, issuer_name: str) -> list[x509.ExtensionType]:
    """Return the AIA (OCSP, CA issuers) and CRL distribution point extensions for a certificate
    that the CA ``issuer_name`` (``root`` or ``intermediate``) issues."""
    access = x509.AuthorityInformationAccess([
        x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                               x509.UniformResourceIdentifier(urls.ocsp_url(issuer_name))),
        x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                               x509.UniformResourceIdentifier(urls.ca_issuers_url(issuer_name))),
    ])
    distribution = x509.CRLDistributionPoints([
        x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(urls.crl_url(issuer_name))],
                               relative_name=None, reasons=None, crl_issuer=None),
    ])
    return [access, distribution]


def tsa_certificate_path(layout: StateLayout) -> Path:
    return layout.pki_dir / "tsa.pem"


def tsa_key_path(layout: StateLayout) -> Path:
    return layout.pki_dir / "tsa.key.pem"


def revocations_path(layout: StateLayout) -> Path:
    return layout.pki_dir / "revoked.json"


def _issue_tsa_certificate(issuer_certificate: x509.Certificate, issuer_key: rsa.RSAPrivateKey,
                           public_key: rsa.RSAPublicKey, urls: PkiUrls, now: datetime.datetime) -> x509.Certificate:
    subject = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, CERTIFICATE_ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, TSA_COMMON_NAME),
    ])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + _TSA_VALIDITY, issuer_certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    for extension in revocation_extensions(urls, "intermediate"):
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def load_or_create_tsa(layout: StateLayout, issuer_certificate: x509.Certificate, issuer_key: rsa.RSAPrivateKey,
                       urls: PkiUrls, now: datetime.datetime, written: list[Path]) -> Status:
    """Create the TSA key and certificate in ``pki/`` when both are missing; keep them when both exist.

    Raises ``PkiIncomplete`` when only one of the two files exists or the certificate was not issued
    by ``issuer_certificate``.
    """
    certificate_path, key_path = tsa_certificate_path(layout), tsa_key_path(layout)
    present = [path for path in (certificate_path, key_path) if path.exists()]
    if len(present) == 2:
        certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
        if certificate.issuer != issuer_certificate.subject:
            raise PkiIncomplete(pki_dir=layout.pki_dir, detail=f"{certificate_path.name} was not issued by "
                                                               f"{layout.intermediate_certificate.name}",
                                ids={"file": str(certificate_path)})
        return Status.EXISTS
    if len(present) == 1:
        missing = key_path if present[0] == certificate_path else certificate_path
        raise PkiIncomplete(pki_dir=layout.pki_dir, detail=f"{missing.name} is missing but {present[0].name} exists",
                            ids={"file": str(missing)})

    private_key = rsa.generate_private_key(public_exponent=65537, key_size=_TSA_KEY_BITS)
    certificate = _issue_tsa_certificate(issuer_certificate, issuer_key, private_key.public_key(), urls, now)
    key_pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    write_file(key_path, key_pem, 0o600)
    written.append(key_path)
    write_file(certificate_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    written.append(certificate_path)
    _logger.info("created TSA certificate %s", certificate_path)
    return Status.CREATED


@dataclass(frozen=True)
class Revocation:
    """One entry of ``pki/revoked.json``: a certificate the test CAs consider revoked."""

    #: Issuer distinguished name, RFC 4514 string as cryptography writes it.
    issuer: str
    serial_number: int
    revoked_at: datetime.datetime
    #: One of ``REVOCATION_REASONS``.
    reason: str


def read_revocations(layout: StateLayout) -> list[Revocation]:
    """Return the entries of ``pki/revoked.json``; an absent file means nothing is revoked."""
    path = revocations_path(layout)
    if not path.exists():
        return []
    entries = json.loads(path.read_text(encoding="utf-8"))
    return [Revocation(issuer=entry["issuer"], serial_number=int(entry["serial_number"]),
                       revoked_at=datetime.datetime.fromisoformat(entry["revoked_at"]), reason=entry["reason"])
            for entry in entries]


def revoke_certificate(layout: StateLayout, certificate: x509.Certificate, *,
                       revoked_at: datetime.datetime | None = None, reason: str = "key_compromise") -> Revocation:
    """Add ``certificate`` to ``pki/revoked.json``; the running services report it revoked at once."""
    if reason not in REVOCATION_REASONS:
        raise ValueError(f"unknown revocation reason {reason!r}; use one of {', '.join(REVOCATION_REASONS)}")
    revoked_at = (revoked_at or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)
    entry = Revocation(issuer=certificate.issuer.rfc4514_string(), serial_number=certificate.serial_number,
                       revoked_at=revoked_at, reason=reason)

    entries = [item for item in read_revocations(layout)
               if (item.issuer, item.serial_number) != (entry.issuer, entry.serial_number)]
    entries.append(entry)
    data = [{"issuer": item.issuer, "serial_number": str(item.serial_number),
             "revoked_at": item.revoked_at.isoformat(), "reason": item.reason} for item in entries]
    write_file(revocations_path(layout), json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8"), 0o644)
    _logger.info("revoked certificate serial %x of %s at %s (%s)", entry.serial_number, entry.issuer,
                 entry.revoked_at.isoformat(), reason)
    return entry
