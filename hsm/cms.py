"""CMS SignedData for PAdES seals, with every part that is the same for all documents built once.

pyHanko builds and encodes the whole CMS structure (certificates, signing-certificate-v2, algorithm
identifiers) for every document, and asn1crypto encoding is most of its time per small PDF. A bulk
job signs thousands of documents with one key, so ``CmsTemplate`` encodes those parts once and per
document only splices the message digest into the signed attributes and the signature into the
SignerInfo.

The result is a detached ``SignedData`` as PAdES B-B requires (ETSI EN 319 142-1, 5.3): signed
attributes content-type, message-digest and signing-certificate-v2, no signing-time attribute (the
signing time is the signature dictionary's ``/M``), and the signer's certificate with its chain.
For B-T the SignerInfo also carries the unsigned attribute signature-time-stamp-token (RFC 3161,
appendix A): a time-stamp token over the signature value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import algos, cms, core, tsp, x509

__all__ = ["CmsTemplate", "der_length"]

_DATA_OID = core.ObjectIdentifier("1.2.840.113549.1.7.1").dump()
_SIGNED_DATA_OID = core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()
_VERSION_1 = core.Integer(1).dump()
_SIGNATURE_TIME_STAMP_TOKEN_OID = core.ObjectIdentifier("1.2.840.113549.1.9.16.2.14").dump()


def der_length(length: int) -> bytes:
    """Return the DER encoding of a length (short form below 128, long form above)."""
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_length(len(content)) + content


@dataclass(frozen=True)
class _AttributeLayout:
    """The DER of the signed attributes' contents with the message digest cut out."""

    before_digest: bytes
    after_digest: bytes


class CmsTemplate:
    """The constant parts of the seal CMS for one signing certificate, chain and algorithm."""

    def __init__(self, signing_cert: x509.Certificate, chain: Sequence[x509.Certificate], digest_algorithm: str,
                 signature_algorithm: algos.SignedDigestAlgorithm, max_signature_size: int,
                 max_timestamp_token_size: int = 0) -> None:
        """``max_timestamp_token_size``: the largest DER time-stamp token in bytes, 0 for none (B-B)."""
        self.digest_algorithm = digest_algorithm
        self.digest_size = hashlib.new(digest_algorithm).digest_size
        self.max_signature_size = max_signature_size
        self.max_timestamp_token_size = max_timestamp_token_size

        self._digest_algorithm_der = algos.DigestAlgorithm({"algorithm": digest_algorithm}).dump()
        self._signature_algorithm_der = signature_algorithm.dump()
        self._signer_id_der = cms.IssuerAndSerialNumber({
            "issuer": signing_cert.issuer,
            "serial_number": signing_cert.serial_number,
        }).dump()

        certificates = {signing_cert.dump(), *(certificate.dump() for certificate in chain)}
        # DER orders the elements of a SET OF by their encodings.
        self._certificates_der = _tlv(0xA0, b"".join(sorted(certificates)))
        self._layout = self._attribute_layout(signing_cert)

    def _attribute_layout(self, signing_cert: x509.Certificate) -> _AttributeLayout:
        placeholder = b"\x00" * self.digest_size
        signing_certificate = tsp.SigningCertificateV2({"certs": [{
            "hash_algorithm": {"algorithm": "sha256"},
            "cert_hash": hashlib.sha256(signing_cert.dump()).digest(),
            "issuer_serial": {
                "issuer": [x509.GeneralName(name="directory_name", value=signing_cert.issuer)],
                "serial_number": signing_cert.serial_number,
            },
        }]})
        attributes = [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}).dump(),
            cms.CMSAttribute({"type": "message_digest", "values": [placeholder]}).dump(),
            cms.CMSAttribute({"type": "signing_certificate_v2", "values": [signing_certificate]}).dump(),
        ]
        # The order is fixed by the attribute types: the digest sits after the OID, so its value
        # never decides the order.
        content = b"".join(sorted(attributes))
        digest_attribute = attributes[1]
        start = content.index(digest_attribute) + len(digest_attribute) - self.digest_size
        return _AttributeLayout(before_digest=content[:start], after_digest=content[start + self.digest_size:])

    def signed_attributes(self, message_digest: bytes) -> bytes:
        """Return the DER ``SET OF Attribute`` that the token signs, for a document's byte-range digest."""
        if len(message_digest) != self.digest_size:
            raise ValueError(f"a {self.digest_algorithm} digest has {self.digest_size} bytes, not {len(message_digest)}")
        content = self._layout.before_digest + message_digest + self._layout.after_digest
        return _tlv(0x31, content)

    def content_info(self, signed_attributes: bytes, signature: bytes, timestamp_token: bytes | None = None) -> bytes:
        """Return the DER ``ContentInfo`` with the SignedData for these signed attributes and signature.

        ``timestamp_token`` is the DER ``ContentInfo`` of a time-stamp token over ``signature``; it
        becomes the signature-time-stamp-token unsigned attribute.
        """
        # In the SignerInfo the attributes are [0] IMPLICIT: same contents, context tag.
        signed_attributes_implicit = b"\xA0" + signed_attributes[1:]
        unsigned_attributes = b""
        if timestamp_token is not None:
            attribute = _tlv(0x30, _SIGNATURE_TIME_STAMP_TOKEN_OID + _tlv(0x31, timestamp_token))
            unsigned_attributes = _tlv(0xA1, attribute)  # [1] IMPLICIT SET OF Attribute
        signer_info = _tlv(0x30, _VERSION_1 + self._signer_id_der + self._digest_algorithm_der
                           + signed_attributes_implicit + self._signature_algorithm_der + _tlv(0x04, signature)
                           + unsigned_attributes)
        signed_data = _tlv(0x30, _VERSION_1
                           + _tlv(0x31, self._digest_algorithm_der)
                           + _tlv(0x30, _DATA_OID)
                           + self._certificates_der
                           + _tlv(0x31, signer_info))
        return _tlv(0x30, _SIGNED_DATA_OID + _tlv(0xA0, signed_data))

    def max_size(self) -> int:
        """Return the largest ``content_info`` in bytes, with a signature of ``max_signature_size``
        and, when set, a time-stamp token of ``max_timestamp_token_size``."""
        attributes = self.signed_attributes(b"\x00" * self.digest_size)
        token = None
        if self.max_timestamp_token_size:
            # Any bytes of the right length give the right DER lengths around them.
            token = b"\x00" * self.max_timestamp_token_size
        return len(self.content_info(attributes, b"\x00" * self.max_signature_size, token))

    def bytes_reserved(self) -> int:
        """Return the ``/Contents`` size in hex digits: twice the largest CMS, plus 64 digits of slack."""
        return 2 * self.max_size() + 64
