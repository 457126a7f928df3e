"""CAdES detached signatures with the SoftHSM2 keys, checked by ``openssl cms -verify``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from asn1crypto import cms

from helpers.signing_checks import make_signer, open_profile
from signing.cades import sign_detached

OPENSSL = shutil.which("openssl")
XTU = Path(__file__).parent / "data" / "real" / "xtu.pdf"


def openssl_verify(signature: Path, content: Path, state_dir: Path, *, chain_in_certfile: bool = False
                   ) -> subprocess.CompletedProcess[str]:
    command = [OPENSSL, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signature),
               "-content", str(content), "-CAfile", str(state_dir / "pki" / "root-ca.pem"),
               "-purpose", "any", "-out", os.devnull]
    if chain_in_certfile:
        command += ["-certfile", str(state_dir / "pki" / "intermediate-ca.pem")]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def signed_attribute_types(signature: Path) -> set[str]:
    content_info = cms.ContentInfo.load(signature.read_bytes())
    signer_info = content_info["content"]["signer_infos"][0]
    return {attribute["type"].native for attribute in signer_info["signed_attrs"]}


CASES = [
    ("officer", False, "sha256_rsa"),
    ("officer", True, "rsassa_pss"),
    ("officer_ec", False, "sha256_ecdsa"),
    ("seal", False, "sha256_rsa"),
    ("seal_ec", False, "sha384_ecdsa"),
]


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.parametrize(("profile", "pss", "mechanism"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_cades_detached_verifies_with_openssl(softhsm_state, tmp_path, profile, pss, mechanism):
    content = tmp_path / "申报表.bin"
    content.write_bytes(os.urandom(300_000))
    signature = tmp_path / "申报表.bin.p7s"

    with open_profile(softhsm_state, profile) as key:
        result = sign_detached(make_signer(softhsm_state, key, pss=pss), content, signature)

    assert result.format == "cades"
    assert result.mechanism == mechanism
    completed = openssl_verify(signature, content, softhsm_state)
    assert completed.returncode == 0, completed.stderr
    assert "Verification successful" in completed.stderr


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_cades_signed_attributes(softhsm_state, tmp_path):
    signature = tmp_path / "xtu.p7s"
    with open_profile(softhsm_state, "officer") as key:
        sign_detached(make_signer(softhsm_state, key), XTU, signature)

    content_info = cms.ContentInfo.load(signature.read_bytes())
    signed_data = content_info["content"]
    assert content_info["content_type"].native == "signed_data"
    assert signed_data["encap_content_info"]["content"].native is None
    assert {"content_type", "message_digest", "signing_time", "signing_certificate_v2"} <= signed_attribute_types(signature)
    # The chain travels in the signature, so openssl needs only the root.
    assert len(signed_data["certificates"]) == 3


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_cades_tampered_content_fails(softhsm_state, tmp_path):
    content = tmp_path / "notice.txt"
    content.write_text("纳税通知书：应缴税额 100 元。\n", encoding="utf-8")
    signature = tmp_path / "notice.txt.p7s"
    with open_profile(softhsm_state, "officer_ec") as key:
        sign_detached(make_signer(softhsm_state, key), content, signature)
    assert openssl_verify(signature, content, softhsm_state, chain_in_certfile=True).returncode == 0

    content.write_text("纳税通知书：应缴税额 900 元。\n", encoding="utf-8")

    completed = openssl_verify(signature, content, softhsm_state)
    assert completed.returncode != 0
    assert "content verify error" in completed.stderr.lower()


@pytest.mark.slow
@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_cades_streams_large_file(softhsm_state, tmp_path):
    content = tmp_path / "large.bin"
    block = os.urandom(1024 * 1024)
    with content.open("wb") as handle:
        for _ in range(96):
            handle.write(block)
    signature = tmp_path / "large.bin.p7s"

    with open_profile(softhsm_state, "seal_ec") as key:
        signer = make_signer(softhsm_state, key)
        tracemalloc.start()
        try:
            sign_detached(signer, content, signature)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    # Hashing reads 1 MiB chunks, so Python allocations stay far below the 96 MiB of content.
    assert peak < 16 * 1024 * 1024, f"peak Python allocation {peak} bytes"
    completed = openssl_verify(signature, content, softhsm_state)
    assert completed.returncode == 0, completed.stderr
