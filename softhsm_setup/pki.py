"""The test PKI: a root CA, an intermediate CA, and certificates for the keys on the tokens.

The CA keys are software keys in ``pki/*.key.pem`` (mode 0600, unencrypted) because these are test
CAs; only the end-entity keys live on the tokens. Certificates are signed with sha256WithRSAEncryption
by RSA-3072 CA keys. Subjects are Chinese, encoded as UTF8String (``C`` as PrintableString, which
X.520 requires), so every consumer of the certificates meets non-ASCII names from the start.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from softhsm_setup.errors import PkiIncomplete
from softhsm_setup.files import Status, write_file
from softhsm_setup.layout import StateLayout
from softhsm_setup.ltv_pki import PkiUrls, revocation_extensions
from softhsm_setup.specs import CERTIFICATE_ORGANIZATION, KeySpec

__all__ = [
    "CertificateAuthority",
    "TestPki",
    "ROOT_COMMON_NAME",
    "INTERMEDIATE_COMMON_NAME",
    "load_or_create_test_pki",
    "issue_end_entity_certificate",
    "end_entity_subject",
    "certificate_matches_key",
    "is_directly_issued_by",
    "certificate_pem",
]

_logger = logging.getLogger(__name__)

ROOT_COMMON_NAME = "qsign 测试根 CA"
INTERMEDIATE_COMMON_NAME = "qsign 测试中级 CA"
_CA_ORGANIZATION = "qsign 测试"
_CA_KEY_BITS = 3072

_ROOT_VALIDITY = datetime.timedelta(days=3652)
_INTERMEDIATE_VALIDITY = datetime.timedelta(days=2922)
_END_ENTITY_VALIDITY = datetime.timedelta(days=1095)
#: Certificates start a little in the past, so a verifier whose clock runs behind accepts them.
_BACKDATE = datetime.timedelta(minutes=5)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class CertificateAuthority:
    """A test CA: its certificate and its software private key."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey


@dataclass
class TestPki:
    """The root and intermediate CA of a state dir, and what loading or creating them did."""

    root: CertificateAuthority
    intermediate: CertificateAuthority
    root_status: Status
    intermediate_status: Status
    files_written: list[Path] = field(default_factory=list)


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def end_entity_subject(spec: KeySpec) -> x509.Name:
    """Return the subject of the certificate for ``spec``: C=CN, O=示例市税务局, CN=<person or seal>."""
    return _name(spec.common_name, CERTIFICATE_ORGANIZATION)


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _public_key_der(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_matches_key(certificate: x509.Certificate, public_key: PublicKey) -> bool:
    """Return whether ``certificate`` certifies ``public_key`` (same SubjectPublicKeyInfo)."""
    return _public_key_der(certificate.public_key()) == _public_key_der(public_key)


def is_directly_issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Return whether ``issuer`` signed ``certificate`` and its subject is the certificate's issuer."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _ca_certificate(subject: x509.Name, public_key: rsa.RSAPublicKey, issuer: CertificateAuthority | None,
                    signing_key: rsa.RSAPrivateKey, path_length: int, not_before: datetime.datetime,
                    not_after: datetime.datetime, urls: PkiUrls | None = None) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    authority_key = issuer.private_key.public_key() if issuer else public_key
    builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key),
                                    critical=False)
    if issuer is not None and urls is not None:
        for extension in revocation_extensions(urls, "root"):
            builder = builder.add_extension(extension, critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _key_pem(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def _load_authority(certificate_path: Path, key_path: Path, layout: StateLayout) -> CertificateAuthority | None:
    """Load a CA from its two files; ``None`` when both are missing, ``PkiIncomplete`` when one is."""
    present = [path for path in (certificate_path, key_path) if path.exists()]
    if not present:
        return None
    if len(present) == 1:
        missing = key_path if present[0] == certificate_path else certificate_path
        raise PkiIncomplete(pki_dir=layout.pki_dir, detail=f"{missing.name} is missing but {present[0].name} exists",
                            ids={"file": str(missing)})

    certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
    private_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise PkiIncomplete(pki_dir=layout.pki_dir, detail=f"{key_path.name} is not an RSA key",
                            ids={"file": str(key_path)})
    if not certificate_matches_key(certificate, private_key.public_key()):
        raise PkiIncomplete(pki_dir=layout.pki_dir,
                            detail=f"{key_path.name} is not the key of {certificate_path.name}",
                            ids={"file": str(key_path)})
    return CertificateAuthority(certificate=certificate, private_key=private_key)


def _create_authority(subject: x509.Name, issuer: CertificateAuthority | None, path_length: int,
                      validity: datetime.timedelta, now: datetime.datetime, certificate_path: Path,
                      key_path: Path, written: list[Path], urls: PkiUrls | None = None) -> CertificateAuthority:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=_CA_KEY_BITS)
    signing_key = issuer.private_key if issuer else private_key
    not_before = now - _BACKDATE
    not_after = now + validity
    if issuer is not None:
        not_after = min(not_after, issuer.certificate.not_valid_after_utc)
    certificate = _ca_certificate(subject, private_key.public_key(), issuer, signing_key, path_length,
                                  not_before, not_after, urls)

    # The key is written first: a certificate without its key could never issue again.
    write_file(key_path, _key_pem(private_key), 0o600)
    written.append(key_path)
    write_file(certificate_path, certificate_pem(certificate), 0o644)
    written.append(certificate_path)
    _logger.info("created test CA %s in %s", subject.rfc4514_string(), certificate_path)
    return CertificateAuthority(certificate=certificate, private_key=private_key)


def load_or_create_test_pki(layout: StateLayout, now: datetime.datetime, urls: PkiUrls | None = None) -> TestPki:
    """Load the root and intermediate CA from ``pki/``, creating whichever is missing.

    A new intermediate certificate points at the root's OCSP responder and CRL under ``urls``.

    A CA whose certificate or key alone exists raises ``PkiIncomplete``, and so does an existing
    intermediate without a root or one the root did not issue, because no new certificate could
    chain to the trust anchor then.
    """
    written: list[Path] = []
    root = _load_authority(layout.root_certificate, layout.root_key, layout)
    intermediate = _load_authority(layout.intermediate_certificate, layout.intermediate_key, layout)

    root_status = Status.EXISTS
    if root is None:
        if intermediate is not None:
            raise PkiIncomplete(pki_dir=layout.pki_dir,
                                detail=f"{layout.root_certificate.name} is missing but "
                                       f"{layout.intermediate_certificate.name} exists",
                                ids={"file": str(layout.root_certificate)})
        root = _create_authority(_name(ROOT_COMMON_NAME, _CA_ORGANIZATION), None, 1, _ROOT_VALIDITY, now,
                                 layout.root_certificate, layout.root_key, written)
        root_status = Status.CREATED

    intermediate_status = Status.EXISTS
    if intermediate is None:
        intermediate = _create_authority(_name(INTERMEDIATE_COMMON_NAME, _CA_ORGANIZATION), root, 0,
                                         _INTERMEDIATE_VALIDITY, now, layout.intermediate_certificate,
                                         layout.intermediate_key, written, urls)
        intermediate_status = Status.CREATED
    elif not is_directly_issued_by(intermediate.certificate, root.certificate):
        raise PkiIncomplete(pki_dir=layout.pki_dir,
                            detail=f"{layout.intermediate_certificate.name} was not issued by "
                                   f"{layout.root_certificate.name}",
                            ids={"file": str(layout.intermediate_certificate)})

    return TestPki(root=root, intermediate=intermediate, root_status=root_status,
                   intermediate_status=intermediate_status, files_written=written)


def issue_end_entity_certificate(issuer: CertificateAuthority, public_key: PublicKey, spec: KeySpec,
                                 now: datetime.datetime, urls: PkiUrls | None = None) -> x509.Certificate:
    """Issue the signing certificate of the token key ``spec`` for ``public_key``.

    keyUsage is digitalSignature and nonRepudiation, critical; the validity is about three years,
    cut at the issuer's own expiry. With ``urls`` the certificate names the intermediate CA's OCSP
    responder, CA issuers file and CRL.
    """
    not_after = min(now + _END_ENTITY_VALIDITY, issuer.certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(end_entity_subject(spec))
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()),
                       critical=False)
    )
    for extension in revocation_extensions(urls, "intermediate") if urls is not None else ():
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer.private_key, hashes.SHA256())
