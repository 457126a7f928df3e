"""Slots, tokens, keys and certificates of a PKCS#11 module, with keys paired to certificates.

A key is paired with the certificate of the same ``CKA_ID``. When IDs are missing or differ, the pair
is found by comparing public keys: the RSA modulus, or the EC point. Private keys are visible only
after a login (``CKA_PRIVATE``), so without one the keys are listed from their public-key objects and
``always_authenticate`` is unknown (``None``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from asn1crypto import core, keys as asn1_keys, x509
from pkcs11 import Attribute, KeyType, ObjectClass, CertificateType
from pkcs11.exceptions import AttributeTypeInvalid, AttributeSensitive, PKCS11Error

from token_drivers.module import Pkcs11Module
from token_drivers.pin import PinState

__all__ = [
    "CertificateInfo",
    "KeyInfo",
    "SlotInfo",
    "TokenInfo",
    "describe_certificate",
    "list_slots",
    "list_token_keys",
    "public_key_fingerprint",
    "certificate_fingerprint",
]


@dataclass
class CertificateInfo:
    """A certificate found on a token."""

    label: str
    id: str
    subject: str
    issuer: str
    serial: str
    sha256: str
    not_after: str
    certificate: x509.Certificate = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "id": self.id, "subject": self.subject, "issuer": self.issuer,
                "serial": self.serial, "sha256": self.sha256, "not_after": self.not_after}


@dataclass
class KeyInfo:
    """A signing key on a token and the certificate paired with it."""

    label: str
    id: str
    type: str
    bits: int | None
    curve: str | None
    always_authenticate: bool | None
    certificate: CertificateInfo | None
    #: How the certificate was paired: ``"id"``, ``"public_key"`` or ``None``.
    paired_by: str | None
    #: ``"private_key"`` when listed after a login, else ``"public_key"``.
    source: str

    def to_dict(self) -> dict[str, Any]:
        result = {key: value for key, value in asdict(self).items() if key != "certificate"}
        result["certificate"] = self.certificate.to_dict() if self.certificate else None
        return result


@dataclass
class TokenInfo:
    """A token present in a slot, as ``C_GetTokenInfo`` reports it."""

    label: str
    manufacturer: str
    model: str
    serial: str
    flags: list[str]
    pin: PinState

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "manufacturer": self.manufacturer, "model": self.model,
                "serial": self.serial, "flags": self.flags, "pin": self.pin.as_dict()}


@dataclass
class SlotInfo:
    """A slot of a module and the token in it, if any."""

    slot_id: int
    description: str
    manufacturer: str
    flags: list[str]
    token: TokenInfo | None


def _flag_names(flags: Any) -> list[str]:
    return sorted(flag.name for flag in type(flags) if flag.value and flag in flags and flag.name)


def _decode_serial(serial: bytes | str) -> str:
    if isinstance(serial, bytes):
        serial = serial.decode("utf-8", errors="replace")
    return serial.strip()


def describe_token(token: Any) -> TokenInfo:
    """Return the ``TokenInfo`` of a python-pkcs11 token (call under the module lock)."""
    return TokenInfo(
        label=token.label.strip(),
        manufacturer=token.manufacturer_id.strip(),
        model=token.model.strip(),
        serial=_decode_serial(token.serial),
        flags=_flag_names(token.flags),
        pin=PinState.from_flags(int(token.flags)),
    )


def list_slots(module: Pkcs11Module) -> list[SlotInfo]:
    """List every slot of the module, with its token's description when one is present."""
    with module.lock:
        result = []
        for slot in module.lib.get_slots(token_present=False):
            token_info = None
            try:
                token_info = describe_token(slot.get_token())
            except PKCS11Error:
                token_info = None
            result.append(SlotInfo(
                slot_id=slot.slot_id,
                description=slot.slot_description.strip(),
                manufacturer=slot.manufacturer_id.strip(),
                flags=_flag_names(slot.flags),
                token=token_info,
            ))
        return result


def describe_certificate(certificate: x509.Certificate, label: str = "", object_id: bytes = b"") -> CertificateInfo:
    """Summarise a certificate with its SHA-256 fingerprint and readable names."""
    return CertificateInfo(
        label=label,
        id=object_id.hex(),
        subject=certificate.subject.human_friendly,
        issuer=certificate.issuer.human_friendly,
        serial=format(certificate.serial_number, "x"),
        sha256=hashlib.sha256(certificate.dump()).hexdigest(),
        not_after=certificate["tbs_certificate"]["validity"]["not_after"].native.isoformat(),
        certificate=certificate,
    )


def _attribute(obj: Any, attribute: Attribute, default: Any = None) -> Any:
    try:
        return obj[attribute]
    except (AttributeTypeInvalid, AttributeSensitive, KeyError):
        return default
    except PKCS11Error:
        return default


def public_key_fingerprint(obj: Any) -> tuple[str, Any] | None:
    """Return ``("rsa", modulus)`` or ``("ec", point)`` for a key object, or ``None`` if unreadable."""
    key_type = _attribute(obj, Attribute.KEY_TYPE)
    if key_type == KeyType.RSA:
        modulus = _attribute(obj, Attribute.MODULUS)
        return ("rsa", int.from_bytes(modulus, "big")) if modulus else None
    if key_type == KeyType.EC:
        point = _attribute(obj, Attribute.EC_POINT)
        if not point:
            return None
        # CKA_EC_POINT is a DER OCTET STRING in PKCS#11 2.20+, but some modules return the raw point.
        try:
            point = core.OctetString.load(point).native
        except ValueError:
            pass
        return ("ec", bytes(point))
    return None


def certificate_fingerprint(certificate: x509.Certificate) -> tuple[str, Any] | None:
    """Return the same kind of fingerprint as ``public_key_fingerprint`` for a certificate's key."""
    public_key: asn1_keys.PublicKeyInfo = certificate.public_key
    algorithm = public_key.algorithm
    if algorithm == "rsa":
        return ("rsa", public_key["public_key"].parsed["modulus"].native)
    if algorithm == "ec":
        return ("ec", bytes(public_key["public_key"]))
    return None


def _key_shape(obj: Any) -> tuple[str, int | None, str | None]:
    key_type = _attribute(obj, Attribute.KEY_TYPE)
    if key_type == KeyType.RSA:
        modulus = _attribute(obj, Attribute.MODULUS)
        bits = _attribute(obj, Attribute.MODULUS_BITS) or (len(modulus) * 8 if modulus else None)
        return "rsa", bits, None
    if key_type == KeyType.EC:
        params = _attribute(obj, Attribute.EC_PARAMS)
        curve = None
        if params:
            try:
                curve = asn1_keys.ECDomainParameters.load(params).chosen.native
            except ValueError:
                curve = None
        return "ec", None, curve
    return str(getattr(key_type, "name", key_type)).lower(), None, None


def _read_certificates(session: Any) -> list[CertificateInfo]:
    certificates = []
    for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE,
                                    Attribute.CERTIFICATE_TYPE: CertificateType.X_509}):
        value = _attribute(obj, Attribute.VALUE)
        if not value:
            continue
        try:
            certificate = x509.Certificate.load(value)
            info = describe_certificate(certificate, _attribute(obj, Attribute.LABEL, "") or "",
                                        _attribute(obj, Attribute.ID, b"") or b"")
        except ValueError:
            continue
        certificates.append(info)
    return certificates


def pair_certificate(key_id: bytes, fingerprint: tuple[str, Any] | None,
                     certificates: list[CertificateInfo]) -> tuple[CertificateInfo | None, str | None]:
    """Find a key's certificate: by ``CKA_ID`` when that certificate's public key agrees, else by public key."""
    fingerprints = {id(info): certificate_fingerprint(info.certificate) for info in certificates}

    if key_id:
        for info in certificates:
            if info.id == key_id.hex() and (fingerprint is None or fingerprints[id(info)] == fingerprint):
                return info, "id"
    if fingerprint is not None:
        for info in certificates:
            if fingerprints[id(info)] == fingerprint:
                return info, "public_key"
    return None, None


def list_token_keys(session: Any, logged_in: bool) -> tuple[list[KeyInfo], list[CertificateInfo]]:
    """List the signing keys of an open session, each with its certificate; also return all certificates.

    With ``logged_in`` the private keys are listed; otherwise the public keys stand in for them. Call
    under the module lock.
    """
    certificates = _read_certificates(session)

    public_by_id: dict[bytes, tuple[str, Any] | None] = {}
    public_objects = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY}))
    for obj in public_objects:
        public_by_id[_attribute(obj, Attribute.ID, b"") or b""] = public_key_fingerprint(obj)

    key_objects = public_objects
    source = "public_key"
    if logged_in:
        key_objects = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
        source = "private_key"

    keys = []
    for obj in key_objects:
        key_id = _attribute(obj, Attribute.ID, b"") or b""
        key_type, bits, curve = _key_shape(obj)
        fingerprint = public_key_fingerprint(obj) or public_by_id.get(key_id)
        certificate, paired_by = pair_certificate(key_id, fingerprint, certificates)
        always = _attribute(obj, Attribute.ALWAYS_AUTHENTICATE, False) if logged_in else None
        if key_type == "ec" and curve is None and certificate is not None:
            curve = certificate.certificate.public_key["algorithm"]["parameters"].chosen.native
        keys.append(KeyInfo(
            label=_attribute(obj, Attribute.LABEL, "") or "",
            id=key_id.hex(),
            type=key_type,
            bits=bits,
            curve=curve,
            always_authenticate=bool(always) if always is not None else None,
            certificate=certificate,
            paired_by=paired_by,
            source=source,
        ))
    keys.sort(key=lambda key: (key.label, key.id))
    return keys, certificates
