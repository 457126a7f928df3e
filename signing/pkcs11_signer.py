"""A pyHanko ``Signer`` over a key handle from ``token_drivers``.

``TokenSigner`` fixes the signature mechanism when it is made: RSA PKCS#1 v1.5 (``sha256_rsa`` …),
RSASSA-PSS (MGF1 with the same hash, salt length = hash length) or ECDSA (``sha256_ecdsa`` …). The
token computes the raw signature through ``key.asign``; pyHanko builds the CMS around it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from asn1crypto import algos, pem, x509
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.pdf_cms import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore

from qsign.config import Config
from signing.errors import ChainNotFound, DigestNotAllowed, KeyTypeUnsupported

__all__ = [
    "SigningKey",
    "TokenSigner",
    "ALLOWED_DIGESTS",
    "select_digest",
    "signature_mechanism",
    "signature_size",
    "estimate_bytes_reserved",
    "load_chain",
]

_logger = logging.getLogger(__name__)

#: Digest algorithms qsign signs with, and their output sizes in bytes.
ALLOWED_DIGESTS = {"sha256": 32, "sha384": 48, "sha512": 64}


class SigningKey(Protocol):
    """The part of ``token_drivers.keys.TokenKey`` that signing uses."""

    key_type: str
    bits: int | None
    curve: str | None
    certificate: x509.Certificate
    token_label: str
    key_label: str

    def sign(self, data: bytes, *, digest_algorithm: str | None = None, pss: bool = False) -> bytes: ...

    async def asign(self, data: bytes, *, digest_algorithm: str | None = None, pss: bool = False) -> bytes: ...


def select_digest(key: SigningKey, requested: str | None = None) -> str:
    """Return the digest algorithm for ``key``: ``requested`` if given, else sha384 for P-384, else sha256.

    Raises ``DigestNotAllowed`` for anything but sha256, sha384 and sha512.
    """
    if requested is not None:
        digest = requested.lower().replace("-", "")
        if digest not in ALLOWED_DIGESTS:
            raise DigestNotAllowed(digest=requested)
        return digest

    if key.key_type == "ec" and _key_bits(key) == 384:
        return "sha384"
    return "sha256"


def signature_mechanism(key: SigningKey, digest_algorithm: str, pss: bool = False) -> algos.SignedDigestAlgorithm:
    """Return the CMS signature algorithm identifier for ``key`` with ``digest_algorithm``.

    Raises ``KeyTypeUnsupported`` for a key that is neither RSA nor EC, or for ``pss`` with an EC key.
    """
    if key.key_type == "rsa" and pss:
        parameters = algos.RSASSAPSSParams({
            "hash_algorithm": {"algorithm": digest_algorithm},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": digest_algorithm}},
            "salt_length": ALLOWED_DIGESTS[digest_algorithm],
            "trailer_field": "trailer_field_bc",
        })
        return algos.SignedDigestAlgorithm({"algorithm": "rsassa_pss", "parameters": parameters})
    if key.key_type == "rsa":
        return algos.SignedDigestAlgorithm({"algorithm": f"{digest_algorithm}_rsa"})
    if key.key_type == "ec" and not pss:
        return algos.SignedDigestAlgorithm({"algorithm": f"{digest_algorithm}_ecdsa"})
    raise KeyTypeUnsupported(key=key.key_label, key_type=key.key_type + (" + PSS" if pss else ""),
                             ids={"key": key.key_label})


def _key_bits(key: SigningKey) -> int:
    """Return the RSA modulus size or the EC field size in bits, from the key or its certificate."""
    if key.key_type == "rsa" and key.bits:
        return int(key.bits)
    return int(key.certificate.public_key.bit_size)


def signature_size(key: SigningKey) -> int:
    """Return the maximum length in bytes of a signature by ``key``.

    RSA: the modulus length. ECDSA: the DER ECDSA-Sig-Value with both integers at full length plus a
    leading zero byte.
    """
    field_bytes = (_key_bits(key) + 7) // 8
    if key.key_type == "rsa":
        return field_bytes
    return len(_dummy_ecdsa_signature(field_bytes))


def _dummy_ecdsa_signature(field_bytes: int) -> bytes:
    largest = (1 << (8 * field_bytes)) - 1
    return algos.DSASignature({"r": largest, "s": largest}).dump()


def estimate_bytes_reserved(signing_cert: x509.Certificate, chain: Iterable[x509.Certificate],
                            max_signature_size: int, digest_algorithm: str) -> int:
    """Return the number of hex digits to reserve in ``/Contents`` for a PAdES B-B signature.

    Computed from the sizes that vary (certificates, issuer name, signature, digests) plus a fixed
    allowance for the CMS structure, so no trial signature is needed. Not enough for a B-T signature:
    a timestamp token adds the TSA's certificates and its own signature.
    """
    certificates = {signing_cert.dump()} | {certificate.dump() for certificate in chain}
    variable = sum(len(der) for der in certificates)
    variable += max_signature_size
    # The issuer name and serial appear twice: in the SignerIdentifier and in signing-certificate-v2.
    variable += 2 * (len(signing_cert.issuer.dump()) + len(signing_cert["tbs_certificate"]["serial_number"].dump()))
    # message-digest and the ESSCertIDv2 certificate hash.
    variable += 2 * ALLOWED_DIGESTS[digest_algorithm]

    # SignedData/SignerInfo headers, OIDs, algorithm identifiers (PSS parameters are the largest,
    # about 70 bytes), content-type and signing-time attributes, DER length octets. pyHanko 0.38 uses
    # about 240 bytes of this for an RSA-PSS signature (measured with a two-CA chain); 1,024 leaves room
    # for longer names and attribute sets.
    fixed = 1024
    return 2 * (variable + fixed)


def load_chain(config: Config) -> list[x509.Certificate]:
    """Read the CA certificates (intermediates, then trust anchors) that ``config``'s [trust] names.

    Each file may contain several PEM or one DER certificate. Raises ``ChainNotFound`` for a file that
    is missing or contains no certificate.
    """
    certificates: list[x509.Certificate] = []
    for path in [*config.intermediates, *config.trust_anchors]:
        certificates.extend(_read_certificates(Path(path)))
    return certificates


def _read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ChainNotFound(path=str(path), reason=error.strerror or type(error).__name__,
                            ids={"path": str(path)}) from error

    try:
        if pem.detect(data):
            return [x509.Certificate.load(der) for _, _, der in pem.unarmor(data, multiple=True)]
        return [x509.Certificate.load(data)]
    except (ValueError, TypeError) as error:
        raise ChainNotFound(path=str(path), reason=f"not a certificate ({error})",
                            ids={"path": str(path)}) from error


class TokenSigner(Signer):
    """A pyHanko signer whose raw signatures come from a token key.

    The digest algorithm and signature mechanism are fixed at construction; pyHanko must be asked for
    the same digest (``PdfSignatureMetadata.md_algorithm``), else ``async_sign_raw`` raises
    ``SigningError``. The key stays owned by the caller, who closes it.
    """

    def __init__(self, key: SigningKey, *, chain: Sequence[x509.Certificate] = (),
                 digest_algorithm: str | None = None, pss: bool = False, embed_roots: bool = True) -> None:
        self.key = key
        self.pss = pss
        self.digest_algorithm = select_digest(key, digest_algorithm)
        mechanism = signature_mechanism(key, self.digest_algorithm, pss)
        self.max_signature_size = signature_size(key)
        super().__init__(
            prefer_pss=pss,
            embed_roots=embed_roots,
            signature_mechanism=mechanism,
            signing_cert=key.certificate,
            cert_registry=SimpleCertificateStore.from_certs(chain),
        )

    @property
    def mechanism_name(self) -> str:
        """Name of the signature algorithm, such as ``sha256_rsa``, ``rsassa_pss`` or ``sha384_ecdsa``."""
        return self.signature_mechanism["algorithm"].native

    def bytes_reserved(self) -> int:
        """Return the ``/Contents`` size in hex digits for a B-B signature by this signer."""
        return estimate_bytes_reserved(self.signing_cert, self.cert_registry, self.max_signature_size,
                                       self.digest_algorithm)

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        """Sign ``data`` (the DER of the signed attributes) on the token.

        A dry run returns a placeholder of the maximum signature size and does not touch the token.
        """
        if digest_algorithm.lower() != self.digest_algorithm:
            raise SigningError(f"signer is set up for {self.digest_algorithm}, "
                               f"but {digest_algorithm} was requested")

        if dry_run:
            if self.key.key_type == "ec":
                return _dummy_ecdsa_signature((_key_bits(self.key) + 7) // 8)
            return bytes(self.max_signature_size)

        _logger.debug("signing %d bytes with key %s on token %s (%s)", len(data), self.key.key_label,
                      self.key.token_label, self.mechanism_name)
        return await self.key.asign(data, digest_algorithm=self.digest_algorithm, pss=self.pss)
