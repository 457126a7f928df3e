"""The agent's TLS certificate: made at first start in the state dir, pinned by its SHA-256 fingerprint.

Phones pin the fingerprint instead of trusting a CA, so the certificate is self-signed. It is shown
for pairing as text, as a QR code PNG and as a QR code in the terminal.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import segno
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["AgentCertificate", "ensure_certificate", "fingerprint_text", "write_qr_png", "terminal_qr"]

_logger = logging.getLogger(__name__)

#: Validity of the self-made certificate; phones pin the fingerprint, so renewal means pairing again.
CERTIFICATE_DAYS = 825


@dataclass(frozen=True)
class AgentCertificate:
    certificate_path: Path
    key_path: Path
    #: SHA-256 of the certificate's DER, lowercase hex without separators.
    fingerprint: str

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate_path, self.key_path)
        return context


def fingerprint_text(fingerprint: str) -> str:
    """Format a hex fingerprint as colon-separated uppercase pairs, the way browsers show it."""
    return ":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2)).upper()


def _make_certificate(name: str, hosts: list[str]) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"qsign agent {name}"[:64])])
    alternative_names: list[x509.GeneralName] = []
    for host in dict.fromkeys(["localhost", "127.0.0.1", "::1", *hosts]):
        try:
            alternative_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alternative_names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder()
                   .subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS))
                   .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def _write_private(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def ensure_certificate(directory: Path, name: str, hosts: list[str]) -> tuple[AgentCertificate, bool]:
    """Return the certificate in ``directory``, making it first if absent; the flag says whether it was made."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    certificate_path = directory / "agent-cert.pem"
    key_path = directory / "agent-key.pem"
    made = False
    if not (certificate_path.exists() and key_path.exists()):
        certificate_pem, key_pem = _make_certificate(name, hosts)
        _write_private(key_path, key_pem, 0o600)
        _write_private(certificate_path, certificate_pem, 0o644)
        made = True
        _logger.info("made the agent TLS certificate %s", certificate_path)

    certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    return AgentCertificate(certificate_path, key_path, fingerprint), made


def write_qr_png(path: Path, content: str) -> None:
    """Write ``content`` as a QR code PNG to ``path``."""
    segno.make(content, error="m").save(str(path), scale=6, border=4)


def terminal_qr(content: str) -> str:
    """Return ``content`` as a QR code drawn with block characters for a terminal."""
    import io

    buffer = io.StringIO()
    segno.make(content, error="m").terminal(out=buffer, compact=True, border=2)
    return buffer.getvalue()
