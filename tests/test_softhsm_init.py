"""``qsign softhsm init``: on-token keys, certificates paired with them, the test PKI, files, re-runs."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
import yaml
from asn1crypto import x509 as asn1_x509
from asn1crypto.core import Integer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from conftest import run_qsign
from qsign.config import apply_environment, load_config
from softhsm_setup.card_rig import CARDS
from softhsm_setup.errors import SoftHsmModuleMissing
from softhsm_setup.init import find_softhsm_module
from softhsm_setup.pki import TEMPLATE_PATH
from softhsm_setup.specs import KEYS, TEST_SO_PIN, TEST_USER_PIN, TOKENS, KeyAlgorithm, KeySpec
from token_drivers.module import load_module

Attribute = pkcs11.Attribute
ObjectClass = pkcs11.ObjectClass

KEY_LABELS = [spec.label for spec in KEYS]

#: The entities and certificates of the certomancer template that init issues the test PKI from.
TEMPLATE = yaml.safe_load(TEMPLATE_PATH.read_text(encoding="utf-8"))["pki-architectures"]["qsign-test"]
ROOT_COMMON_NAME = TEMPLATE["entities"]["root-ca"]["common-name"]
INTERMEDIATE_COMMON_NAME = TEMPLATE["entities"]["intermediate-ca"]["common-name"]


@pytest.fixture(scope="module")
def token_sessions(softhsm_state: Path) -> Iterator[dict[str, pkcs11.Session]]:
    """Logged-in sessions on both tokens of ``softhsm_state``, keyed by token label."""
    config = load_config(softhsm_state)
    apply_environment(config)
    module = load_module(config.default_module)

    sessions: dict[str, pkcs11.Session] = {}
    with module.lock:
        for token_spec in TOKENS:
            token = module.lib.get_token(token_label=token_spec.label)
            sessions[token_spec.label] = token.open(user_pin=TEST_USER_PIN)
    try:
        yield sessions
    finally:
        with module.lock:
            for session in sessions.values():
                session.close()


def _spec(label: str) -> KeySpec:
    return next(spec for spec in KEYS if spec.label == label)


def _single_object(session: pkcs11.Session, object_class: ObjectClass, label: str) -> pkcs11.Object:
    found = list(session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label}))
    assert len(found) == 1, f"{len(found)} objects of class {object_class.name} labelled {label}"
    return found[0]


def _string_types(name: x509.Name) -> dict[str, str]:
    """Return the ASN.1 string type of each attribute of ``name``, as asn1crypto names them."""
    parsed = asn1_x509.Name.load(name.public_bytes())
    return {attribute["type"].native: attribute["value"].name
            for rdn in parsed.chosen for attribute in rdn}


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def _run_init_json(state_dir: Path) -> dict:
    completed = run_qsign("softhsm", "init", "--json", state_dir=state_dir)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return json.loads(completed.stdout)


def _run_on_token(state_dir: Path, token_label: str, code: str) -> None:
    """Run ``code`` in a subprocess with ``session``, a logged-in read-write session on the token."""
    script = (
        "import pkcs11, sys\n"
        "from pkcs11 import Attribute, ObjectClass, KeyType\n"
        "from qsign.config import load_config, apply_environment\n"
        "from token_drivers.module import load_module\n"
        f"config = load_config(__import__('pathlib').Path({str(state_dir)!r}))\n"
        "apply_environment(config)\n"
        "module = load_module(config.default_module)\n"
        f"token = module.lib.get_token(token_label={token_label!r})\n"
        f"with token.open(rw=True, user_pin={TEST_USER_PIN!r}) as session:\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                               check=False)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize("label", KEY_LABELS)
def test_private_key_generated_on_token_and_protected(token_sessions, label):
    spec = _spec(label)
    key = _single_object(token_sessions[spec.token_label], ObjectClass.PRIVATE_KEY, label)

    assert key[Attribute.SENSITIVE] is True
    assert key[Attribute.EXTRACTABLE] is False
    assert key[Attribute.NEVER_EXTRACTABLE] is True
    assert key[Attribute.ALWAYS_SENSITIVE] is True
    assert key[Attribute.LOCAL] is True
    assert key[Attribute.TOKEN] is True
    assert key[Attribute.PRIVATE] is True
    assert key[Attribute.SIGN] is True
    assert key[Attribute.DECRYPT] is False
    assert key[Attribute.ID] == spec.key_id


@pytest.mark.parametrize("label", KEY_LABELS)
def test_private_key_value_not_readable(token_sessions, label):
    spec = _spec(label)
    key = _single_object(token_sessions[spec.token_label], ObjectClass.PRIVATE_KEY, label)
    sensitive = Attribute.PRIVATE_EXPONENT if spec.algorithm is KeyAlgorithm.RSA else Attribute.VALUE

    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        key[sensitive]


@pytest.mark.parametrize("label", KEY_LABELS)
def test_always_authenticate_only_on_qualified(token_sessions, label):
    spec = _spec(label)
    key = _single_object(token_sessions[spec.token_label], ObjectClass.PRIVATE_KEY, label)

    assert key[Attribute.ALWAYS_AUTHENTICATE] is (label == "officer-qualified")


@pytest.mark.parametrize("label, token_label, algorithm, size", [
    ("officer-rsa", "qsign-officer", "rsa", 2048),
    ("officer-ec", "qsign-officer", "ec", "secp256r1"),
    ("officer-qualified", "qsign-officer", "rsa", 2048),
    ("seal-rsa", "qsign-hsm", "rsa", 3072),
    ("seal-ec", "qsign-hsm", "ec", "secp384r1"),
])
def test_certificate_key_type_and_size(softhsm_state, label, token_label, algorithm, size):
    certificate = x509.load_pem_x509_certificate((softhsm_state / "pki" / f"{label}.pem").read_bytes())
    public_key = certificate.public_key()

    assert _spec(label).token_label == token_label
    if algorithm == "rsa":
        assert public_key.key_size == size
    else:
        assert public_key.curve.name == size


def test_key_ids_distinct():
    key_ids = [spec.key_id for spec in KEYS]

    assert len(set(key_ids)) == len(key_ids)


@pytest.mark.parametrize("label", KEY_LABELS)
def test_certificate_object_pairs_with_key(token_sessions, softhsm_state, label):
    spec = _spec(label)
    session = token_sessions[spec.token_label]
    certificate_object = _single_object(session, ObjectClass.CERTIFICATE, label)
    public_object = _single_object(session, ObjectClass.PUBLIC_KEY, label)
    certificate = x509.load_der_x509_certificate(certificate_object[Attribute.VALUE])

    assert certificate_object[Attribute.ID] == spec.key_id
    assert public_object[Attribute.ID] == spec.key_id
    assert certificate_object[Attribute.CERTIFICATE_TYPE] == pkcs11.CertificateType.X_509
    assert certificate_object[Attribute.PRIVATE] is False
    assert certificate_object[Attribute.SUBJECT] == certificate.subject.public_bytes()
    assert certificate_object[Attribute.ISSUER] == certificate.issuer.public_bytes()
    assert Integer.load(certificate_object[Attribute.SERIAL_NUMBER]).native == certificate.serial_number
    file_certificate = x509.load_pem_x509_certificate((softhsm_state / "pki" / f"{label}.pem").read_bytes())
    assert file_certificate == certificate


@pytest.mark.parametrize("label", KEY_LABELS)
def test_certificate_certifies_token_public_key(token_sessions, label):
    spec = _spec(label)
    session = token_sessions[spec.token_label]
    certificate = x509.load_der_x509_certificate(
        _single_object(session, ObjectClass.CERTIFICATE, label)[Attribute.VALUE])
    public_object = _single_object(session, ObjectClass.PUBLIC_KEY, label)
    public_numbers = certificate.public_key().public_numbers()

    if spec.algorithm is KeyAlgorithm.RSA:
        assert int.from_bytes(public_object[Attribute.MODULUS], "big") == public_numbers.n
        assert int.from_bytes(public_object[Attribute.PUBLIC_EXPONENT], "big") == public_numbers.e
    else:
        point = certificate.public_key().public_bytes(serialization.Encoding.X962,
                                                      serialization.PublicFormat.UncompressedPoint)
        # CKA_EC_POINT is the point wrapped in a DER OCTET STRING (tag 04, one length byte here).
        assert public_object[Attribute.EC_POINT] == bytes([0x04, len(point)]) + point


@pytest.mark.parametrize("label", KEY_LABELS)
def test_chain_verifies_with_cryptography(softhsm_state, label):
    pki = softhsm_state / "pki"
    root = x509.load_pem_x509_certificate((pki / "root-ca.pem").read_bytes())
    intermediate = x509.load_pem_x509_certificate((pki / "intermediate-ca.pem").read_bytes())
    end_entity = x509.load_pem_x509_certificate((pki / f"{label}.pem").read_bytes())

    root.verify_directly_issued_by(root)
    intermediate.verify_directly_issued_by(root)
    end_entity.verify_directly_issued_by(intermediate)


def test_chain_verifies_with_openssl(softhsm_state):
    pki = softhsm_state / "pki"
    end_entities = [str(pki / f"{label}.pem") for label in KEY_LABELS]

    completed = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(pki / "root-ca.pem"),
         "-untrusted", str(pki / "intermediate-ca.pem"), *end_entities],
        capture_output=True, text=True, timeout=30, check=False)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.count(": OK") == len(KEY_LABELS)


@pytest.mark.parametrize("label", KEY_LABELS)
def test_chinese_subject_round_trips(softhsm_state, label):
    spec = _spec(label)
    certificate = x509.load_pem_x509_certificate((softhsm_state / "pki" / f"{label}.pem").read_bytes())
    reloaded = x509.load_der_x509_certificate(certificate.public_bytes(serialization.Encoding.DER))
    common_name = reloaded.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
    organization = reloaded.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0]
    country = reloaded.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0]

    string_types = _string_types(reloaded.subject)

    assert common_name.value == spec.common_name
    assert organization.value == "示例市税务局"
    assert country.value == "CN"
    assert string_types == {"common_name": "utf8_string", "organization_name": "utf8_string",
                            "country_name": "printable_string"}
    assert reloaded.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == INTERMEDIATE_COMMON_NAME


@pytest.mark.parametrize("label", KEY_LABELS)
def test_template_names_match_key_specs(label):
    """softhsm_setup/certomancer.yml and specs.py describe the same keys and subjects."""
    certificate = TEMPLATE["certs"][label]
    assert certificate["subject-key"] == label
    assert TEMPLATE["entities"][certificate["subject"]]["common-name"] == _spec(label).common_name


@pytest.mark.parametrize("card", sorted(CARDS))
def test_template_names_match_cards(card):
    """The virtual smart cards' certificates come from the same template as the token keys'."""
    spec = CARDS[card]
    certificate = TEMPLATE["certs"][spec.certificate_label]
    assert certificate["subject-key"] == spec.certificate_label
    assert TEMPLATE["entities"][certificate["subject"]]["common-name"] == spec.common_name


def test_officer_and_seal_common_names():
    assert {spec.common_name for spec in KEYS if spec.role.value == "seal"} == {"示例市税务局电子印章"}
    officer_names = [spec.common_name for spec in KEYS if spec.role.value == "officer"]
    assert len(set(officer_names)) == len(officer_names)


@pytest.mark.parametrize("label", KEY_LABELS)
def test_end_entity_extensions(softhsm_state, label):
    pki = softhsm_state / "pki"
    intermediate = x509.load_pem_x509_certificate((pki / "intermediate-ca.pem").read_bytes())
    certificate = x509.load_pem_x509_certificate((pki / f"{label}.pem").read_bytes())
    key_usage = certificate.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
    subject_key_id = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    authority_key_id = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    intermediate_key_id = intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    validity_days = (certificate.not_valid_after_utc - certificate.not_valid_before_utc).days

    assert key_usage.critical
    assert key_usage.value.digital_signature
    assert key_usage.value.content_commitment
    assert not key_usage.value.key_cert_sign
    assert subject_key_id == x509.SubjectKeyIdentifier.from_public_key(certificate.public_key())
    assert authority_key_id.key_identifier == intermediate_key_id.digest
    assert certificate.signature_hash_algorithm.name == "sha256"
    assert 1000 <= validity_days <= 1100


def test_ca_certificates(softhsm_state):
    pki = softhsm_state / "pki"
    root = x509.load_pem_x509_certificate((pki / "root-ca.pem").read_bytes())
    intermediate = x509.load_pem_x509_certificate((pki / "intermediate-ca.pem").read_bytes())

    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ROOT_COMMON_NAME
    assert root.public_key().key_size == 3072
    assert root.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSA_WITH_SHA256
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


def test_serial_numbers_distinct(softhsm_state):
    paths = [softhsm_state / "pki" / "root-ca.pem", softhsm_state / "pki" / "intermediate-ca.pem"]
    paths += [softhsm_state / "pki" / f"{label}.pem" for label in KEY_LABELS]
    serials = [x509.load_pem_x509_certificate(path.read_bytes()).serial_number for path in paths]

    assert len(set(serials)) == len(serials)


@pytest.mark.parametrize("relative, mode", [
    ("secrets", 0o700),
    ("secrets/officer.pin", 0o600),
    ("secrets/hsm.pin", 0o600),
    ("secrets/officer-so.pin", 0o600),
    ("secrets/hsm-so.pin", 0o600),
    ("pki/root-ca.key.pem", 0o600),
    ("pki/intermediate-ca.key.pem", 0o600),
    ("pki/tsa.key.pem", 0o600),
    ("softhsm/tokens", 0o700),
])
def test_file_mode(softhsm_state, relative, mode):
    assert stat.S_IMODE((softhsm_state / relative).stat().st_mode) == mode


@pytest.mark.parametrize("relative, pin", [
    ("secrets/officer.pin", TEST_USER_PIN),
    ("secrets/hsm.pin", TEST_USER_PIN),
    ("secrets/officer-so.pin", TEST_SO_PIN),
    ("secrets/hsm-so.pin", TEST_SO_PIN),
])
def test_pin_file_content(softhsm_state, relative, pin):
    assert (softhsm_state / relative).read_text(encoding="utf-8") == f"{pin}\n"


def test_softhsm_config_inside_state_dir(softhsm_state):
    text = (softhsm_state / "softhsm" / "softhsm2.conf").read_text(encoding="utf-8")

    assert f"directories.tokendir = {(softhsm_state / 'softhsm' / 'tokens').resolve()}\n" in text
    assert "objectstore.backend = file\n" in text
    assert "log.level = ERROR\n" in text
    assert "slots.removable = false\n" in text


def test_config_profiles(softhsm_state):
    config = load_config(softhsm_state)

    assert config.language == "zh_CN"
    assert config.default_module == find_softhsm_module()
    assert config.softhsm_conf == softhsm_state / "softhsm" / "softhsm2.conf"
    assert config.trust_anchors == [softhsm_state / "pki" / "root-ca.pem"]
    assert config.intermediates == [softhsm_state / "pki" / "intermediate-ca.pem"]
    assert {name: (p.token_label, p.key_label, p.pin_file) for name, p in config.tokens.items()} == {
        "officer": ("qsign-officer", "officer-rsa", softhsm_state / "secrets" / "officer.pin"),
        "officer_ec": ("qsign-officer", "officer-ec", softhsm_state / "secrets" / "officer.pin"),
        "officer_qualified": ("qsign-officer", "officer-qualified", softhsm_state / "secrets" / "officer.pin"),
        "seal": ("qsign-hsm", "seal-rsa", softhsm_state / "secrets" / "hsm.pin"),
        "seal_ec": ("qsign-hsm", "seal-ec", softhsm_state / "secrets" / "hsm.pin"),
    }


def test_second_run_changes_nothing(tmp_path):
    first = _run_init_json(tmp_path)
    before = _tree_hashes(tmp_path)

    completed = run_qsign("softhsm", "init", "--lang", "zh_CN", state_dir=tmp_path)
    after = _tree_hashes(tmp_path)

    assert first["changed"] is True
    assert completed.returncode == 0, completed.stderr
    assert "已存在" in completed.stdout
    assert "未做任何更改" in completed.stdout
    assert "WARNING: these are TEST PINs" in completed.stdout
    assert "警告：以下是测试 PIN" in completed.stdout
    # Measured with SoftHSM2 2.6.1: C_Login rewrites token.object and increments a counter in its
    # first 8 bytes. The next test checks the rest of token.object, and here every other file.
    for name in before:
        if name.endswith("/token.object"):
            continue
        assert after[name] == before[name], name
    assert sorted(after) == sorted(before)


def test_second_run_token_object_differs_only_in_generation(tmp_path):
    _run_init_json(tmp_path)
    token_objects = sorted(tmp_path.rglob("token.object"))
    before = [path.read_bytes() for path in token_objects]

    second = _run_init_json(tmp_path)
    after = [path.read_bytes() for path in token_objects]

    assert second["changed"] is False
    assert second["files_written"] == []
    assert {item["status"] for item in second["tokens"] + second["keys"] + second["certificates"]} == {"exists"}
    assert len(token_objects) == 2
    for old, new in zip(before, after):
        assert new[8:] == old[8:]


def test_partial_state_completed(tmp_path):
    first = _run_init_json(tmp_path)
    first_certificates = {item["label"]: item["serial_number"] for item in first["certificates"]}
    _run_on_token(tmp_path, "qsign-officer", (
        "for obj in list(session.get_objects({Attribute.LABEL: 'officer-ec'})):\n"
        "    obj.destroy()\n"
    ))
    (tmp_path / "pki" / "seal-rsa.pem").unlink()
    (tmp_path / "secrets" / "hsm.pin").unlink()

    second = _run_init_json(tmp_path)
    key_status = {item["label"]: item["status"] for item in second["keys"]}
    certificate_status = {item["label"]: item["status"] for item in second["certificates"]}
    second_certificates = {item["label"]: item["serial_number"] for item in second["certificates"]}

    assert key_status == {"officer-rsa": "exists", "officer-ec": "created", "officer-qualified": "exists",
                          "seal-rsa": "exists", "seal-ec": "exists"}
    assert certificate_status["officer-ec"] == "created"
    assert second_certificates["officer-ec"] != first_certificates["officer-ec"]
    assert certificate_status["seal-rsa"] == "exists"
    assert second_certificates["seal-rsa"] == first_certificates["seal-rsa"]
    # The new officer-ec key gets a new serial number in certomancer.yml, hence a new certificate.
    assert sorted(second["files_written"]) == sorted([
        str(tmp_path / "pki" / "officer-ec.pub.pem"),
        str(tmp_path / "pki" / "certomancer.yml"),
        str(tmp_path / "pki" / "officer-ec.pem"),
        str(tmp_path / "pki" / "seal-rsa.pem"),
        str(tmp_path / "secrets" / "hsm.pin"),
    ])
    assert (tmp_path / "secrets" / "hsm.pin").read_text(encoding="utf-8") == f"{TEST_USER_PIN}\n"

    third = _run_init_json(tmp_path)
    assert third["changed"] is False


def test_mismatched_key_rejected(tmp_path):
    _run_init_json(tmp_path)
    _run_on_token(tmp_path, "qsign-hsm", (
        "for obj in list(session.get_objects({Attribute.LABEL: 'seal-rsa'})):\n"
        "    obj.destroy()\n"
        "session.generate_keypair(KeyType.RSA, 2048, label='seal-rsa', id=b'\\x01\\x01', store=True)\n"
    ))
    before = _tree_hashes(tmp_path / "pki")

    completed = run_qsign("softhsm", "init", "--json", state_dir=tmp_path)
    error = json.loads(completed.stdout)["error"]

    assert completed.returncode == 1
    assert error["code"] == "softhsm_key_mismatch"
    assert error["ids"] == {"token": "qsign-hsm", "key": "seal-rsa"}
    assert _tree_hashes(tmp_path / "pki") == before


def test_missing_module_reported(monkeypatch):
    monkeypatch.setattr("softhsm_setup.init.SOFTHSM_MODULE_CANDIDATES", ("/nonexistent/libsofthsm2.so",))

    with pytest.raises(SoftHsmModuleMissing) as raised:
        find_softhsm_module()

    assert raised.value.code == "softhsm_module_missing"
    assert "apt-get install softhsm2" in raised.value.message("en")
    assert "apt-get install softhsm2" in raised.value.message("zh_CN")


def test_missing_softhsm_util_reported(tmp_path):
    completed = run_qsign("softhsm", "init", "--json", state_dir=tmp_path, env={"PATH": str(tmp_path / "empty")})
    error = json.loads(completed.stdout)["error"]

    assert completed.returncode == 1
    assert error["code"] == "softhsm_util_missing"
    assert "apt-get install softhsm2" in error["message"]
