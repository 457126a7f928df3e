"""Choosing the PKCS#11 mechanism for a signature from what the token offers.

A mechanism that hashes on the token (``CKM_SHA256_RSA_PKCS``) is preferred; otherwise the data is
hashed locally and the raw mechanism signs the digest (``CKM_RSA_PKCS`` over a DigestInfo,
``CKM_RSA_PKCS_PSS``, ``CKM_ECDSA``). SoftHSM2 2.6.1 has no ``CKM_ECDSA_SHA256``, so EC signatures there
always take the local-hash path. ECDSA results come back as ``r || s`` and are converted to DER.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from asn1crypto import algos
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import MGF, Mechanism

from token_drivers.errors import MechanismInvalid

__all__ = ["SignaturePlan", "plan_signature", "DIGEST_ALGORITHMS"]

DIGEST_ALGORITHMS = ("sha256", "sha384", "sha512")

_HASH_MECHANISM = {"sha256": Mechanism.SHA256, "sha384": Mechanism.SHA384, "sha512": Mechanism.SHA512}
_MGF = {"sha256": MGF.SHA256, "sha384": MGF.SHA384, "sha512": MGF.SHA512}
_RSA_PKCS_HASHED = {"sha256": Mechanism.SHA256_RSA_PKCS, "sha384": Mechanism.SHA384_RSA_PKCS,
                    "sha512": Mechanism.SHA512_RSA_PKCS}
_RSA_PSS_HASHED = {"sha256": Mechanism.SHA256_RSA_PKCS_PSS, "sha384": Mechanism.SHA384_RSA_PKCS_PSS,
                   "sha512": Mechanism.SHA512_RSA_PKCS_PSS}
_ECDSA_HASHED = {"sha256": Mechanism.ECDSA_SHA256, "sha384": Mechanism.ECDSA_SHA384,
                 "sha512": Mechanism.ECDSA_SHA512}


@dataclass(frozen=True)
class SignaturePlan:
    """How to sign one message: the mechanism, its parameter, and whether to hash locally first."""

    mechanism: Mechanism
    mechanism_param: Any
    digest_algorithm: str
    hash_locally: bool
    #: Wrap the local digest in a DER DigestInfo (raw ``CKM_RSA_PKCS``).
    wrap_digest_info: bool
    #: Convert the token's ``r || s`` output to a DER ECDSA-Sig-Value.
    ecdsa_to_der: bool

    @property
    def name(self) -> str:
        return self.mechanism.name

    def prepare(self, data: bytes) -> bytes:
        """Return what the token must sign for ``data`` under this plan."""
        if not self.hash_locally:
            return data

        digest = hashlib.new(self.digest_algorithm, data).digest()
        if not self.wrap_digest_info:
            return digest
        digest_info = algos.DigestInfo({
            "digest_algorithm": {"algorithm": self.digest_algorithm},
            "digest": digest,
        })
        return digest_info.dump()

    def finish(self, raw_signature: bytes) -> bytes:
        """Return the signature in the form CMS carries it."""
        if not self.ecdsa_to_der:
            return raw_signature
        half = len(raw_signature) // 2
        r = int.from_bytes(raw_signature[:half], "big")
        s = int.from_bytes(raw_signature[half:], "big")
        return encode_dss_signature(r, s)


def plan_signature(key_type: str, available: set[Mechanism], digest_algorithm: str = "sha256",
                   pss: bool = False) -> SignaturePlan:
    """Choose the mechanism for a ``key_type`` (``rsa``/``ec``) signature from the token's list.

    RSA-PSS uses MGF1 with the same hash and a salt as long as the hash. Raises ``MechanismInvalid``
    naming the mechanism when the token has neither the hashing nor the raw variant, and for ``pss``
    with a key that is not RSA.
    """
    if digest_algorithm not in DIGEST_ALGORITHMS:
        raise MechanismInvalid(mechanism=digest_algorithm)
    digest_length = hashlib.new(digest_algorithm).digest_size

    if key_type == "rsa" and pss:
        param = (_HASH_MECHANISM[digest_algorithm], _MGF[digest_algorithm], digest_length)
        if _RSA_PSS_HASHED[digest_algorithm] in available:
            return SignaturePlan(_RSA_PSS_HASHED[digest_algorithm], param, digest_algorithm,
                                 hash_locally=False, wrap_digest_info=False, ecdsa_to_der=False)
        if Mechanism.RSA_PKCS_PSS in available:
            return SignaturePlan(Mechanism.RSA_PKCS_PSS, param, digest_algorithm,
                                 hash_locally=True, wrap_digest_info=False, ecdsa_to_der=False)
        raise MechanismInvalid(mechanism=f"RSA-PSS with {digest_algorithm.upper()}")

    if key_type == "rsa":
        if _RSA_PKCS_HASHED[digest_algorithm] in available:
            return SignaturePlan(_RSA_PKCS_HASHED[digest_algorithm], None, digest_algorithm,
                                 hash_locally=False, wrap_digest_info=False, ecdsa_to_der=False)
        if Mechanism.RSA_PKCS in available:
            return SignaturePlan(Mechanism.RSA_PKCS, None, digest_algorithm,
                                 hash_locally=True, wrap_digest_info=True, ecdsa_to_der=False)
        raise MechanismInvalid(mechanism=f"RSA PKCS#1 v1.5 with {digest_algorithm.upper()}")

    if key_type == "ec":
        if pss:
            # Without this check an EC key would silently return ECDSA for a PSS request.
            raise MechanismInvalid(mechanism="RSA-PSS")
        if _ECDSA_HASHED[digest_algorithm] in available:
            return SignaturePlan(_ECDSA_HASHED[digest_algorithm], None, digest_algorithm,
                                 hash_locally=False, wrap_digest_info=False, ecdsa_to_der=True)
        if Mechanism.ECDSA in available:
            return SignaturePlan(Mechanism.ECDSA, None, digest_algorithm,
                                 hash_locally=True, wrap_digest_info=False, ecdsa_to_der=True)
        raise MechanismInvalid(mechanism=f"ECDSA with {digest_algorithm.upper()}")

    raise MechanismInvalid(mechanism=f"{key_type} signature")
