"""What ``qsign softhsm init`` makes: two tokens, five keys, their certificates and test PINs.

Officers sign with keys on the token ``qsign-officer``, a stand-in for a smart card. Bulk sealing
uses the keys on ``qsign-hsm``, a stand-in for an HSM. Every key has a fixed two-byte ``CKA_ID``,
unique across both tokens, so a key and its certificate pair by ``CKA_ID`` as PKCS#11 tools expect.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "TEST_USER_PIN",
    "TEST_SO_PIN",
    "KeyAlgorithm",
    "CertificateRole",
    "TokenSpec",
    "KeySpec",
    "TOKENS",
    "KEYS",
    "CERTIFICATE_ORGANIZATION",
    "keys_of",
]

#: User PIN of both test tokens, for test set-ups only because this source file publishes it.
TEST_USER_PIN = "123456"
#: Security officer PIN of both test tokens. Test set-ups only.
TEST_SO_PIN = "12345678"

CERTIFICATE_ORGANIZATION = "示例市税务局"


class KeyAlgorithm(enum.Enum):
    RSA = "rsa"
    EC = "ec"


class CertificateRole(enum.Enum):
    """What an end-entity certificate is for, which decides its subject."""

    OFFICER = "officer"
    SEAL = "seal"


@dataclass(frozen=True)
class TokenSpec:
    """A SoftHSM2 token and the files that hold its PINs, relative to the state dir."""

    label: str
    pin_file: str
    so_pin_file: str


@dataclass(frozen=True)
class KeySpec:
    """A key pair generated on a token, and the certificate issued for it."""

    #: Name of the ``[tokens.NAME]`` profile in ``qsign.toml``.
    profile: str
    token_label: str
    label: str
    key_id: bytes
    algorithm: KeyAlgorithm
    #: RSA modulus length in bits; ``None`` for EC.
    bits: int | None
    #: Named curve as asn1crypto and OpenSSL spell it (``secp256r1``); ``None`` for RSA.
    curve: str | None
    #: ``CKA_ALWAYS_AUTHENTICATE``: every signature needs a context-specific login.
    always_authenticate: bool
    role: CertificateRole
    #: Subject common name of the certificate.
    common_name: str

    @property
    def description(self) -> str:
        """The algorithm and size as a person reads it: ``RSA-2048``, ``EC secp384r1``."""
        if self.algorithm is KeyAlgorithm.RSA:
            return f"RSA-{self.bits}"
        return f"EC {self.curve}"


OFFICER_TOKEN = TokenSpec(label="qsign-officer", pin_file="secrets/officer.pin",
                          so_pin_file="secrets/officer-so.pin")
HSM_TOKEN = TokenSpec(label="qsign-hsm", pin_file="secrets/hsm.pin", so_pin_file="secrets/hsm-so.pin")

TOKENS: tuple[TokenSpec, ...] = (OFFICER_TOKEN, HSM_TOKEN)

_SEAL_NAME = "示例市税务局电子印章"

KEYS: tuple[KeySpec, ...] = (
    KeySpec(profile="officer", token_label=OFFICER_TOKEN.label, label="officer-rsa", key_id=b"\x00\x01",
            algorithm=KeyAlgorithm.RSA, bits=2048, curve=None, always_authenticate=False,
            role=CertificateRole.OFFICER, common_name="张伟"),
    KeySpec(profile="officer_ec", token_label=OFFICER_TOKEN.label, label="officer-ec", key_id=b"\x00\x02",
            algorithm=KeyAlgorithm.EC, bits=None, curve="secp256r1", always_authenticate=False,
            role=CertificateRole.OFFICER, common_name="李娜"),
    KeySpec(profile="officer_qualified", token_label=OFFICER_TOKEN.label, label="officer-qualified",
            key_id=b"\x00\x03", algorithm=KeyAlgorithm.RSA, bits=2048, curve=None, always_authenticate=True,
            role=CertificateRole.OFFICER, common_name="王芳"),
    KeySpec(profile="seal", token_label=HSM_TOKEN.label, label="seal-rsa", key_id=b"\x01\x01",
            algorithm=KeyAlgorithm.RSA, bits=3072, curve=None, always_authenticate=False,
            role=CertificateRole.SEAL, common_name=_SEAL_NAME),
    KeySpec(profile="seal_ec", token_label=HSM_TOKEN.label, label="seal-ec", key_id=b"\x01\x02",
            algorithm=KeyAlgorithm.EC, bits=None, curve="secp384r1", always_authenticate=False,
            role=CertificateRole.SEAL, common_name=_SEAL_NAME),
)


def keys_of(token: TokenSpec) -> tuple[KeySpec, ...]:
    """Return the keys that live on ``token``, in creation order."""
    return tuple(key for key in KEYS if key.token_label == token.label)
