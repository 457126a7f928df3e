"""The policies package: file validation that names the bad key, and the certificate and algorithm rules."""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509

from policies import (AlgorithmPolicy, CertificatePolicy, PolicyInvalid, check_algorithm, check_certificate,
                      load_policy, parse_policy)
from softhsm_setup.policy_file import DEMO_POLICY

NOW = datetime.now(timezone.utc)


def _demo() -> dict:
    return tomllib.loads(DEMO_POLICY)


def test_demo_policy_loads():
    policy = parse_policy(_demo())

    assert set(policy.users) == {"officer-li", "reviewer-wang", "operator-zhao", "auditor-chen", "admin-sun"}
    assert policy.templates["officer-signature"].required_approvals == 1
    assert policy.templates["officer-signature"].seal.rect == (16.0, 16.0, 196.0, 106.0)


@pytest.mark.parametrize("level", ["B-B", "B-T", "B-LT", "B-LTA"])
def test_template_levels_and_tsa(level):
    tsa = {"url": "http://127.0.0.1:8471/qsign-test/tsa/tsa", "timeout": 3.0}
    raw = _with("templates.officer-signature.signature_level", level)
    raw["templates"]["officer-signature"]["tsa"] = tsa
    raw["certificates"]["check_revocation"] = True
    policy = parse_policy(raw)

    assert policy.templates["officer-signature"].signature_level == level
    assert policy.templates["officer-signature"].tsa == tsa
    assert policy.templates["officer-attachment"].tsa is None
    assert policy.certificates.check_revocation is True
    assert parse_policy(_demo()).certificates.check_revocation is False


def _with(path: str, value) -> dict:
    raw = _demo()
    *parents, last = path.split(".")
    table = raw
    for name in parents:
        table = table[name]
    table[last] = value
    return raw


@pytest.mark.parametrize(("path", "value", "key"), [
    ("users.officer-li.roles", ["officer", "janitor"], "users.officer-li.roles"),
    ("users.officer-li.roles", [], "users.officer-li.roles"),
    ("users.officer-li.token_profile", 7, "users.officer-li.token_profile"),
    ("users.officer-li.colour", "red", "users.officer-li.colour"),
    ("templates.officer-signature.required_approvals", -1, "templates.officer-signature.required_approvals"),
    ("templates.officer-signature.signature_format", "xades", "templates.officer-signature.signature_format"),
    ("templates.officer-signature.signature_level", "B-LTX", "templates.officer-signature.signature_level"),
    ("templates.officer-attachment.signature_level", "B-LT", "templates.officer-attachment.signature_level"),
    ("templates.officer-signature.tsa", {"timeout": 3.0}, "templates.officer-signature.tsa"),
    ("templates.officer-signature.tsa", "http://127.0.0.1:8471/tsa", "templates.officer-signature.tsa"),
    ("certificates.check_revocation", "yes", "certificates.check_revocation"),
    ("templates.officer-signature.document_types", ["text/plain"], "templates.officer-signature.document_types"),
    ("templates.officer-signature.max_bytes", True, "templates.officer-signature.max_bytes"),
    ("templates.officer-signature.seal.rect", [0, 0, 10], "templates.officer-signature.seal.rect"),
    ("templates.officer-signature.seal.page", 0, "templates.officer-signature.seal.page"),
    ("templates.officer-signature.valid_until", "tomorrow", "templates.officer-signature.valid_until"),
    ("certificates.key_usage", ["sign_everything"], "certificates.key_usage"),
    ("algorithms.rsa_min_bits", 1024, "algorithms.rsa_min_bits"),
    ("algorithms.ec_curves", ["secp192r1"], "algorithms.ec_curves"),
    ("version", 2, "version"),
])
def test_invalid_value_names_key(path, value, key):
    with pytest.raises(PolicyInvalid) as raised:
        parse_policy(_with(path, value), "policy.toml")

    assert raised.value.ids["key"] == key
    assert key in raised.value.message("en")


def test_officer_without_token_profile_is_invalid():
    raw = _demo()
    del raw["users"]["officer-li"]["token_profile"]
    with pytest.raises(PolicyInvalid) as raised:
        parse_policy(raw)
    assert raised.value.ids["key"] == "users.officer-li.token_profile"


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(PolicyInvalid):
        load_policy(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("users = [", encoding="utf-8")
    with pytest.raises(PolicyInvalid):
        load_policy(broken)


@pytest.mark.parametrize(("key_type", "bits", "curve", "digest", "rule"), [
    ("rsa", 2048, None, "sha256", "algorithm"),
    ("rsa", 1024, None, "sha256", "algorithm.rsa_bits"),
    ("ec", None, "secp256r1", "sha256", "algorithm"),
    ("ec", None, "secp384r1", "sha384", "algorithm"),
    ("ec", None, "secp192r1", "sha256", "algorithm.ec_curve"),
    ("rsa", 3072, None, "sha1", "algorithm.digest"),
    ("dsa", 2048, None, "sha256", "algorithm.key_type"),
])
def test_algorithm_policy(key_type, bits, curve, digest, rule):
    decision = check_algorithm(AlgorithmPolicy(), key_type, bits, curve, digest)

    assert decision.rule == rule
    assert decision.allowed is (rule == "algorithm")


def _certificate(state_dir: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((state_dir / "pki" / name).read_bytes())


@pytest.fixture(scope="module")
def pki(softhsm_state):
    return {
        "officer": _certificate(softhsm_state, "officer-rsa.pem"),
        "root": _certificate(softhsm_state, "root-ca.pem"),
        "intermediate": _certificate(softhsm_state, "intermediate-ca.pem"),
    }


def test_officer_certificate_allowed(pki):
    decision = check_certificate(CertificatePolicy(), pki["officer"], [pki["root"]], [pki["intermediate"]], NOW)
    assert decision.allowed


@pytest.mark.parametrize(("case", "rule"), [
    ("no_anchor", "certificate.chain"),
    ("expired", "certificate.validity"),
    ("ca_as_signer", "certificate.key_usage"),
    ("policy_oid", "certificate.policy_oids"),
])
def test_certificate_denials(pki, case, rule):
    policy = CertificatePolicy()
    certificate, anchors, when = pki["officer"], [pki["root"]], NOW
    if case == "no_anchor":
        anchors = [pki["officer"]]
    elif case == "expired":
        when = pki["officer"].not_valid_after_utc + timedelta(days=1)
    elif case == "ca_as_signer":
        certificate = pki["intermediate"]
    elif case == "policy_oid":
        policy = CertificatePolicy(required_policy_oids=("1.2.156.999.1",))

    decision = check_certificate(policy, certificate, anchors, [pki["intermediate"]], when)

    assert not decision.allowed
    assert decision.rule == rule
