"""Tokens, key pairs and certificate objects on SoftHSM2, through python-pkcs11.

python-pkcs11 0.10 has no call for ``C_InitToken``, so tokens are initialised by ``softhsm2-util
--init-token --free`` in a subprocess (about 10 ms per token in a one-off measurement with
SoftHSM2 2.6.1 on Debian 12). SoftHSM2 lists only the tokens it found at ``C_Initialize``, so the
caller reinitializes the module after creating one. Every function that takes a session calls
into the module, so the caller must hold ``Pkcs11Module.lock``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from typing import Any

import pkcs11
from asn1crypto.core import Integer, OctetString
from asn1crypto.keys import ECDomainParameters
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, CertificateType, KeyType, MechanismFlag, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from softhsm_setup.errors import CertificateMismatch, KeyMismatch, SoftHsmUtilMissing, TokenInitFailed
from softhsm_setup.layout import StateLayout
from softhsm_setup.softhsm_config import softhsm_environment
from softhsm_setup.specs import KeyAlgorithm, KeySpec
from token_drivers.errors import KeyAmbiguous, TokenAmbiguous
from token_drivers.module import Pkcs11Module

__all__ = [
    "find_token",
    "init_token",
    "find_private_key",
    "generate_key_pair",
    "check_private_key",
    "read_public_key",
    "find_certificate",
    "store_certificate",
]

_logger = logging.getLogger(__name__)

_CURVES: dict[str, ec.EllipticCurve] = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def find_token(module: Pkcs11Module, label: str) -> pkcs11.Token | None:
    """Return the initialised token labelled ``label``, or ``None`` when there is none."""
    tokens = list(module.lib.get_tokens(token_label=label))
    if len(tokens) > 1:
        raise TokenAmbiguous(token=label, ids={"token": label})
    return tokens[0] if tokens else None


def init_token(layout: StateLayout, label: str, user_pin: str, so_pin: str) -> None:
    """Initialise the first free SoftHSM2 slot as token ``label`` with the given PINs.

    Runs ``softhsm2-util`` with ``SOFTHSM2_CONF`` of ``layout``, so the token lands in the state
    dir's token directory. Raises ``SoftHsmUtilMissing`` or ``TokenInitFailed``.
    """
    program = shutil.which("softhsm2-util")
    if program is None:
        raise SoftHsmUtilMissing()

    # NOTE: softhsm2-util takes the PINs on its command line, where other local users can read them
    # (ps, /proc). That is acceptable for these published test PINs and for nothing else.
    command = [program, "--init-token", "--free", "--label", label, "--pin", user_pin, "--so-pin", so_pin]
    _logger.info("initialising SoftHSM2 token %s", label)
    try:
        completed = subprocess.run(command, env=softhsm_environment(layout), capture_output=True, text=True,
                                   timeout=60, check=False)
    except subprocess.TimeoutExpired as error:
        raise TokenInitFailed(token=label, status="timeout", detail="no exit after 60 s",
                              ids={"token": label}) from error

    if completed.returncode != 0:
        detail = (completed.stderr.strip() or completed.stdout.strip() or "no output").splitlines()[-1]
        raise TokenInitFailed(token=label, status=completed.returncode, detail=detail, ids={"token": label})


def find_private_key(session: pkcs11.Session, spec: KeySpec) -> pkcs11.PrivateKey | None:
    """Return the private key labelled ``spec.label``, or ``None``; ``KeyAmbiguous`` when several."""
    found = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: spec.label}))
    if len(found) > 1:
        raise KeyAmbiguous(token=spec.token_label, key=spec.label,
                           ids={"token": spec.token_label, "key": spec.label})
    return found[0] if found else None


def _private_template(spec: KeySpec) -> dict[Attribute, Any]:
    return {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
        Attribute.ALWAYS_AUTHENTICATE: spec.always_authenticate,
    }


def _public_template() -> dict[Attribute, Any]:
    return {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
    }


def generate_key_pair(session: pkcs11.Session, spec: KeySpec) -> None:
    """Generate the key pair ``spec`` on the token of ``session`` (a read-write, logged-in session).

    The private key is generated on the token and never leaves it: ``CKA_SENSITIVE`` true,
    ``CKA_EXTRACTABLE`` false, usable for signing only.
    """
    options: dict[str, Any] = {
        "id": spec.key_id,
        "label": spec.label,
        "store": True,
        "capabilities": MechanismFlag.SIGN | MechanismFlag.VERIFY,
        "public_template": _public_template(),
        "private_template": _private_template(spec),
    }

    if spec.algorithm is KeyAlgorithm.RSA:
        session.generate_keypair(KeyType.RSA, spec.bits, **options)
    else:
        parameters = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(spec.curve)}, local=True)
        parameters.generate_keypair(**options)

    _logger.info("generated key %s (%s) on token %s", spec.label, spec.description, spec.token_label)


def _curve_name(ec_params: bytes) -> str:
    parameters = ECDomainParameters.load(ec_params)
    if parameters.name != "named":
        return "explicit parameters"
    return str(parameters.chosen.native)


def check_private_key(key: pkcs11.PrivateKey, spec: KeySpec, layout: StateLayout) -> None:
    """Raise ``KeyMismatch`` unless the existing ``key`` has the type, size and attributes of ``spec``."""
    attributes = key.get_attributes([Attribute.KEY_TYPE, Attribute.ID, Attribute.TOKEN, Attribute.PRIVATE,
                                     Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.SIGN,
                                     Attribute.ALWAYS_AUTHENTICATE])
    expected_type = KeyType.RSA if spec.algorithm is KeyAlgorithm.RSA else KeyType.EC
    expected = {
        Attribute.KEY_TYPE: expected_type,
        Attribute.ID: spec.key_id,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.ALWAYS_AUTHENTICATE: spec.always_authenticate,
    }
    problems = [f"{name.name} is {attributes.get(name)!r}, expected {value!r}"
                for name, value in expected.items() if attributes.get(name) != value]

    if not problems and spec.algorithm is KeyAlgorithm.RSA:
        bits = len(key[Attribute.MODULUS].lstrip(b"\x00")) * 8
        if bits != spec.bits:
            problems.append(f"modulus is {bits} bits, expected {spec.bits}")
    elif not problems:
        curve = _curve_name(key[Attribute.EC_PARAMS])
        if curve != spec.curve:
            problems.append(f"curve is {curve}, expected {spec.curve}")

    if problems:
        raise KeyMismatch(token=spec.token_label, key=spec.label, detail="; ".join(problems),
                          state_dir=layout.state_dir, ids={"token": spec.token_label, "key": spec.label})


def _unwrap_ec_point(value: bytes, curve: ec.EllipticCurve) -> bytes:
    """Return the X9.62 point from ``CKA_EC_POINT``.

    PKCS#11 specifies the point DER-encoded as an OCTET STRING, and SoftHSM2 returns it that way;
    some modules return the bare point. The length distinguishes the two: an uncompressed point is
    ``1 + 2 * field bytes`` long, and its OCTET STRING wrapping is two bytes longer.
    """
    field_bytes = (curve.key_size + 7) // 8
    if len(value) == 1 + 2 * field_bytes:
        return value
    return bytes(OctetString.load(value).native)


def read_public_key(session: pkcs11.Session, spec: KeySpec, layout: StateLayout) -> PublicKey:
    """Read the public key of ``spec`` back from its ``CKO_PUBLIC_KEY`` object on the token."""
    found = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: spec.label,
                                      Attribute.ID: spec.key_id}))
    if len(found) != 1:
        raise KeyMismatch(token=spec.token_label, key=spec.label,
                          detail=f"{len(found)} public key objects with this label and CKA_ID, expected 1",
                          state_dir=layout.state_dir, ids={"token": spec.token_label, "key": spec.label})
    public = found[0]

    if spec.algorithm is KeyAlgorithm.RSA:
        modulus = int.from_bytes(public[Attribute.MODULUS], "big")
        exponent = int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()

    curve = _CURVES[_curve_name(public[Attribute.EC_PARAMS])]
    point = _unwrap_ec_point(public[Attribute.EC_POINT], curve)
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)


def find_certificate(session: pkcs11.Session, spec: KeySpec, layout: StateLayout) -> x509.Certificate | None:
    """Return the X.509 certificate object labelled ``spec.label``, or ``None`` when there is none.

    Raises ``CertificateMismatch`` when several exist or the one found has another ``CKA_ID``.
    """
    found = list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: spec.label}))
    if not found:
        return None

    ids = {"token": spec.token_label, "key": spec.label}
    if len(found) > 1:
        raise CertificateMismatch(token=spec.token_label, key=spec.label, state_dir=layout.state_dir, ids=ids,
                                  detail=f"{len(found)} certificate objects carry this label, expected 1")
    if found[0][Attribute.ID] != spec.key_id:
        raise CertificateMismatch(token=spec.token_label, key=spec.label, state_dir=layout.state_dir, ids=ids,
                                  detail=f"its CKA_ID is {found[0][Attribute.ID].hex()}, "
                                         f"expected {spec.key_id.hex()}")
    return x509.load_der_x509_certificate(found[0][Attribute.VALUE])


def store_certificate(session: pkcs11.Session, spec: KeySpec, certificate: x509.Certificate) -> None:
    """Write ``certificate`` to the token as a public ``CKO_CERTIFICATE`` with the key's label and ID."""
    session.create_object({
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.LABEL: spec.label,
        Attribute.ID: spec.key_id,
        Attribute.SUBJECT: certificate.subject.public_bytes(),
        Attribute.ISSUER: certificate.issuer.public_bytes(),
        # CKA_SERIAL_NUMBER is the DER encoding of the serial number, INTEGER tag included.
        Attribute.SERIAL_NUMBER: Integer(certificate.serial_number).dump(),
        Attribute.VALUE: certificate.public_bytes(serialization.Encoding.DER),
    })
    _logger.info("stored certificate of key %s on token %s", spec.label, spec.token_label)
