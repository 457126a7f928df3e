"""TokenSigner over SoftHSM2 keys: mechanisms, digests, dry-run sizes and the reserved signature space."""

from __future__ import annotations

import asyncio

import pytest
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes

from helpers.signing_checks import make_signer, open_profile
from qsign.errors import QsignError
from signing.pkcs11_signer import select_digest, signature_size

PROFILES = ["officer", "officer_ec", "officer_qualified", "seal", "seal_ec"]


@pytest.mark.parametrize(("profile", "digest"), [("officer", "sha256"), ("officer_ec", "sha256"),
                                                 ("seal", "sha256"), ("seal_ec", "sha384")])
def test_default_digest_follows_key(softhsm_state, profile, digest):
    with open_profile(softhsm_state, profile) as key:
        assert select_digest(key) == digest


@pytest.mark.parametrize("requested", ["sha1", "md5", "sha3_256"])
def test_weak_or_unknown_digest_rejected(softhsm_state, requested):
    with open_profile(softhsm_state, "officer") as key:
        with pytest.raises(QsignError) as caught:
            make_signer(softhsm_state, key, digest_algorithm=requested)

    assert caught.value.code == "digest_not_allowed"


def test_pss_with_ec_key_rejected(softhsm_state):
    with open_profile(softhsm_state, "officer_ec") as key:
        with pytest.raises(QsignError) as caught:
            make_signer(softhsm_state, key, pss=True)

    assert caught.value.code == "key_type_unsupported"


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("pss", [False, True], ids=["pkcs1", "pss"])
def test_dry_run_matches_real_signature_size(softhsm_state, profile, pss):
    with open_profile(softhsm_state, profile) as key:
        if pss and key.key_type != "rsa":
            pytest.skip("PSS applies to RSA keys only")
        signer = make_signer(softhsm_state, key, pss=pss)
        digest = bytes(32 if signer.digest_algorithm == "sha256" else 48)

        async def sign(dry_run: bool):
            return await signer.async_sign(digest, signer.digest_algorithm, dry_run=dry_run, use_pades=True,
                                           signed_attr_settings=PdfCMSSignedAttributes())

        dry = asyncio.run(sign(True)).dump()
        real = asyncio.run(sign(False)).dump()

    raw_signature_size = len(asyncio.run(signer.async_sign_raw(b"x", signer.digest_algorithm, dry_run=True)))
    assert raw_signature_size == signature_size(key)
    # An ECDSA signature is up to two bytes shorter than the maximum when r or s has a leading zero.
    assert len(real) <= len(dry) <= len(real) + 2
    # /Contents contains the DER as hex: the reserve must fit it, and waste no more than about 2 KB.
    assert len(dry) * 2 <= signer.bytes_reserved() <= len(dry) * 2 + 2 * 1024 + 64
