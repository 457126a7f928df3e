"""Encryption at rest with the key-encryption key on the SoftHSM2 token: non-extractable, wrap on token."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pkcs11.exceptions as p11
import pytest

from archive.errors import DocumentCorrupt, KeyEncryptionKeyUnavailable
from helpers.archive_state import TEST_KEK_LABEL, finding_codes, make_archive_state, open_archive, verify_json
from qsign.config import apply_environment, load_config, write_config

HSM_TOKEN = "qsign-hsm"


def _pkcs11_state(tmp_path: Path, softhsm_state: Path, kek_label: str = TEST_KEK_LABEL) -> Path:
    state = make_archive_state(tmp_path / "state", softhsm_state, encryption="pkcs11", kek_profile="archive_kek",
                               kek_create=True)
    raw = tomllib.loads((state / "qsign.toml").read_text(encoding="utf-8"))
    raw["tokens"]["archive_kek"]["key"] = kek_label
    write_config(state / "qsign.toml", raw)
    return state


@pytest.fixture
def hsm_session(softhsm_state: Path) -> Iterator[pkcs11.Session]:
    """A logged-in read-write session on the qsign-hsm token of the test session."""
    from token_drivers.keys import find_token
    from token_drivers.login import CKU_USER, c_login
    from token_drivers.module import load_module

    config = load_config(softhsm_state)
    apply_environment(config)
    module = load_module(config.default_module)
    pin = (softhsm_state / "secrets" / "hsm.pin").read_text().strip()
    with module.lock:
        session = find_token(module, HSM_TOKEN).open(rw=True)
        try:
            c_login(module, session.handle, CKU_USER, pin)
        except p11.UserAlreadyLoggedIn:
            pass
    try:
        with module.lock:
            yield session
    finally:
        with module.lock:
            session.close()


def test_store_and_read_with_token_kek(tmp_path: Path, softhsm_state: Path) -> None:
    state = _pkcs11_state(tmp_path, softhsm_state)
    plaintext = "增值税专用发票 signed".encode() * 1000

    with open_archive(state) as archive:
        record = archive.store_document(plaintext, "signed", actor="system:test")
        stored = archive.store.path_for(record.sha256).read_bytes()
        read_back = archive.read_document(record.sha256)

    assert record.encrypted
    assert record.kek_id == f"pkcs11:{HSM_TOKEN}/{TEST_KEK_LABEL}"
    assert plaintext[:60] not in stored
    assert read_back == plaintext
    code, report = verify_json(state)
    assert code == 0, report
    assert finding_codes(report) == []


def test_token_kek_is_not_extractable(tmp_path: Path, softhsm_state: Path, hsm_session: pkcs11.Session) -> None:
    state = _pkcs11_state(tmp_path, softhsm_state)
    with open_archive(state) as archive:
        archive.store_document(b"creates the key on first use", "original")

    kek = hsm_session.get_key(object_class=pkcs11.ObjectClass.SECRET_KEY, key_type=pkcs11.KeyType.AES,
                              label=TEST_KEK_LABEL)
    assert kek[pkcs11.Attribute.TOKEN] is True
    assert kek[pkcs11.Attribute.EXTRACTABLE] is False
    assert kek[pkcs11.Attribute.SENSITIVE] is True
    assert kek[pkcs11.Attribute.NEVER_EXTRACTABLE] is True
    assert kek[pkcs11.Attribute.VALUE_LEN] == 32
    with pytest.raises(p11.AttributeSensitive):
        kek[pkcs11.Attribute.VALUE]
    with pytest.raises(p11.AttributeReadOnly):
        kek[pkcs11.Attribute.EXTRACTABLE] = True

    # Not even another key on the token can wrap it out.
    wrapper = hsm_session.generate_key(pkcs11.KeyType.AES, 256, store=False,
                                       template={pkcs11.Attribute.WRAP: True})
    with pytest.raises(p11.KeyUnextractable):
        wrapper.wrap_key(kek, mechanism=pkcs11.Mechanism.AES_KEY_WRAP)


def test_wrong_token_kek_is_corrupt(tmp_path: Path, softhsm_state: Path) -> None:
    state = _pkcs11_state(tmp_path, softhsm_state)
    with open_archive(state) as archive:
        record = archive.store_document(b"wrapped by the first key", "original")

    other = _pkcs11_state(tmp_path / "other", softhsm_state, kek_label=TEST_KEK_LABEL + "-other")
    raw = tomllib.loads((other / "qsign.toml").read_text(encoding="utf-8"))
    raw["archive"]["database_url"] = f"sqlite:///{state / 'archive' / 'archive.db'}"
    raw["archive"]["documents_dir"] = str(state / "archive" / "documents")
    write_config(other / "qsign.toml", raw)

    with open_archive(other) as archive, pytest.raises(DocumentCorrupt) as raised:
        archive.read_document(record.sha256)

    assert raised.value.code == "document_corrupt"
    assert TEST_KEK_LABEL in str(raised.value.params["reason"])


def test_flipped_byte_with_token_kek_is_corrupt(tmp_path: Path, softhsm_state: Path) -> None:
    state = _pkcs11_state(tmp_path, softhsm_state)
    with open_archive(state) as archive:
        record = archive.store_document(b"B" * 10000, "original")
        path = archive.store.path_for(record.sha256)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x20
        path.write_bytes(bytes(data))

        with pytest.raises(DocumentCorrupt) as raised:
            archive.read_document(record.sha256)
        assert raised.value.code == "document_corrupt"
        report = archive.verify()

    assert "document_altered" in [finding.code for finding in report.findings]


def test_extractable_kek_rejected(tmp_path: Path, softhsm_state: Path, hsm_session: pkcs11.Session) -> None:
    label = TEST_KEK_LABEL + "-extractable"
    try:
        hsm_session.get_key(object_class=pkcs11.ObjectClass.SECRET_KEY, label=label)
    except p11.NoSuchKey:
        hsm_session.generate_key(pkcs11.KeyType.AES, 256, label=label, store=True,
                                 template={pkcs11.Attribute.EXTRACTABLE: True, pkcs11.Attribute.SENSITIVE: False,
                                           pkcs11.Attribute.WRAP: True, pkcs11.Attribute.UNWRAP: True})
    state = _pkcs11_state(tmp_path, softhsm_state, kek_label=label)

    with pytest.raises(KeyEncryptionKeyUnavailable) as raised:
        open_archive(state)

    assert "extractable" in str(raised.value)


def test_missing_kek_without_create_rejected(tmp_path: Path, softhsm_state: Path) -> None:
    state = _pkcs11_state(tmp_path, softhsm_state, kek_label=TEST_KEK_LABEL + "-absent")
    raw = tomllib.loads((state / "qsign.toml").read_text(encoding="utf-8"))
    raw["archive"]["kek_create"] = False
    write_config(state / "qsign.toml", raw)

    with pytest.raises(KeyEncryptionKeyUnavailable) as raised:
        open_archive(state)

    assert raised.value.code == "kek_unavailable"
    assert "kek_create" in raised.value.message("zh_CN")
