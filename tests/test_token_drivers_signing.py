"""TokenKey.sign and asign on the SoftHSM2 tokens of ``qsign softhsm init``, checked with ``cryptography``.

These run in the pytest process, on the tokens of the session fixture ``softhsm_state``.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from cryptography import x509 as crypto_x509
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pkcs11 import Attribute, Mechanism, ObjectClass

from helpers.softhsm_rig import token_public_key, verify_signature
from qsign.config import Config, apply_environment, load_config
from token_drivers.errors import UserNotLoggedIn, pkcs11_errors
from token_drivers.keys import find_token, open_profile_key


@pytest.fixture(scope="module")
def config(softhsm_state: Path) -> Config:
    loaded = load_config(softhsm_state)
    apply_environment(loaded)
    return loaded


# Each row: profile in qsign.toml, digest algorithm, RSA-PSS.
SIGNATURE_CASES = [
    ("officer", "sha256", False),
    ("officer", "sha384", False),
    ("officer", "sha512", False),
    ("officer", "sha256", True),
    ("officer", "sha384", True),
    ("officer", "sha512", True),
    ("seal", "sha256", False),
    ("seal", "sha512", True),
    ("officer_ec", "sha256", False),
    ("seal_ec", "sha384", False),
]


@pytest.mark.parametrize(("profile", "digest_algorithm", "pss"), SIGNATURE_CASES)
def test_signature_verifies(config: Config, profile: str, digest_algorithm: str, pss: bool) -> None:
    data = f"CMS signed attributes stand-in for {profile}".encode()

    with open_profile_key(config, profile) as key:
        signature = key.sign(data, digest_algorithm=digest_algorithm, pss=pss)
        public_key = token_public_key(key)
        certificate = crypto_x509.load_der_x509_certificate(key.certificate.dump())

    verify_signature(public_key, signature, data, digest_algorithm, pss)
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert certificate.public_key().public_bytes(*spki) == public_key.public_bytes(*spki)


def test_key_shapes_match_profiles(config: Config) -> None:
    shapes = {}
    for profile in ("officer", "officer_ec", "officer_qualified", "seal", "seal_ec"):
        with open_profile_key(config, profile) as key:
            shapes[profile] = (key.key_type, key.bits, key.curve, key.always_authenticate)

    assert shapes == {
        "officer": ("rsa", 2048, None, False),
        "officer_ec": ("ec", None, "secp256r1", False),
        "officer_qualified": ("rsa", 2048, None, True),
        "seal": ("rsa", 3072, None, False),
        "seal_ec": ("ec", None, "secp384r1", False),
    }


def test_keys_opened_in_turn_on_one_token_sign(config: Config) -> None:
    """Opening a second key logs out and in again, which makes SoftHSM2 drop the first key's handle."""
    with open_profile_key(config, "officer") as first:
        first_signature = first.sign(b"before")
        with open_profile_key(config, "officer_ec") as second:
            signatures = {"officer": first.sign(b"after"), "officer_ec": second.sign(b"after")}
            public_keys = {"officer": token_public_key(first), "officer_ec": token_public_key(second)}

    verify_signature(public_keys["officer"], first_signature, b"before", "sha256")
    for profile, signature in signatures.items():
        verify_signature(public_keys[profile], signature, b"after", "sha256")


def test_thousand_ecdsa_signatures_are_der(config: Config) -> None:
    """Every signature is strict DER, including r or s with the high bit set or with leading zeros.

    With P-256 about half the values have the high bit set (DER adds a 0x00 byte) and about one in
    128 signatures has r or s below 2**248 (a leading zero byte in ``r || s`` that DER drops).
    """
    high_bit = 0
    leading_zero = 0

    with open_profile_key(config, "officer_ec") as key:
        public_key = token_public_key(key)
        for index in range(1000):
            data = f"document {index}".encode()
            signature = key.sign(data)

            r, s = decode_dss_signature(signature)
            assert encode_dss_signature(r, s) == signature, f"signature {index} is not DER"
            verify_signature(public_key, signature, data, "sha256")
            high_bit += sum(value.bit_length() == 256 for value in (r, s))
            leading_zero += sum(value.bit_length() <= 248 for value in (r, s))

    assert high_bit > 0
    assert leading_zero > 0


def test_always_authenticate_key_signs_twice(config: Config) -> None:
    """Each signature gets its own context-specific login; without it SoftHSM2 refuses."""
    with open_profile_key(config, "officer_qualified") as key:
        assert key.always_authenticate
        public_key = token_public_key(key)
        signatures = [key.sign(b"first document"), key.sign(b"second document")]

        with key.module.lock:
            token = find_token(key.module, token_label=key.token_label)
            # The application is logged in through key's session, so a second session finds the
            # private key and signs with it without the context-specific login.
            with token.open() as session:
                private_key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key.key_label)
                assert private_key[Attribute.ALWAYS_AUTHENTICATE]
                with pytest.raises(UserNotLoggedIn) as refused, pkcs11_errors(token=key.token_label):
                    private_key.sign(b"third document", mechanism=Mechanism.SHA256_RSA_PKCS)

        signatures.append(key.sign(b"third document"))

    assert refused.value.code == "user_not_logged_in"
    for signature, data in zip(signatures, (b"first document", b"second document", b"third document")):
        verify_signature(public_key, signature, data, "sha256")


def test_two_threads_sign_concurrently(config: Config) -> None:
    """Two threads × 200 signatures through the module lock; SoftHSM2 crashes without it."""
    per_thread = 200
    results: dict[str, list[tuple[bytes, bytes]]] = {}
    failures: list[BaseException] = []
    barrier = threading.Barrier(2)

    def sign_many(name: str, key: object) -> None:
        try:
            barrier.wait(timeout=30)
            results[name] = [(data, key.sign(data)) for data in
                             (f"{name} {index}".encode() for index in range(per_thread))]
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    with open_profile_key(config, "officer") as rsa_key, open_profile_key(config, "officer_ec") as ec_key:
        public_keys = {"rsa": token_public_key(rsa_key), "ec": token_public_key(ec_key)}
        threads = [threading.Thread(target=sign_many, args=("rsa", rsa_key)),
                   threading.Thread(target=sign_many, args=("ec", ec_key))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    assert not failures
    assert sorted(results) == ["ec", "rsa"]
    for name, signed in results.items():
        assert len(signed) == per_thread
        for data, signature in signed:
            verify_signature(public_keys[name], signature, data, "sha256")


async def test_asign_from_asyncio(config: Config) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    with open_profile_key(config, "seal_ec") as key:
        public_key = token_public_key(key)
        ticker = asyncio.create_task(tick())
        messages = [f"sealed document {index}".encode() for index in range(50)]
        signatures = await asyncio.gather(*(key.asign(message) for message in messages))
        stop.set()
        await ticker

    # The event loop kept running other tasks while the module's worker thread signed.
    assert ticks > 1
    for message, signature in zip(messages, signatures):
        verify_signature(public_key, signature, message, "sha384")
