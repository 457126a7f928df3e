"""Backups: signed with the SoftHSM2 seal key, restored only when every byte checks, verified after."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from archive.backup import restore_backup
from archive.errors import BackupInvalid, RestoreTargetNotEmpty
from conftest import run_qsign
from helpers.archive_state import finding_codes, make_archive_state, open_archive, verify_json
from qsign.config import load_config, write_config

DOCUMENTS = [b"%PDF-1.7 first", "第二份文件".encode() * 300, bytes(range(256)) * 2000]


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory, softhsm_state: Path) -> tuple[Path, Path, list[str]]:
    """An encrypted archive with three documents and its backup file, written by the CLI."""
    base = tmp_path_factory.mktemp("archive-backup")
    state = make_archive_state(base / "state", softhsm_state, encryption="keyfile", kek_create=True,
                               checkpoint_profile="seal", checkpoint_every=5)
    with open_archive(state) as archive:
        hashes = [archive.store_document(data, "signed", actor="system:test").sha256 for data in DOCUMENTS]
        archive.audit("officer:li", "request.signed", object_ids={"request_id": "r1"}, document_hashes=hashes)

    backup = base / "backup.tar"
    completed = run_qsign("archive", "backup", "--to", str(backup), "--json", state_dir=state)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["documents"] == 3
    assert summary["signer"] == "qsign-hsm/seal-rsa"
    return state, backup, hashes


def test_backup_restore_verify_round_trip(backed_up, tmp_path: Path) -> None:
    state, backup, hashes = backed_up
    target = tmp_path / "restored"

    completed = run_qsign("archive", "restore", str(backup), "--to", str(target), "--json", state_dir=state)
    assert completed.returncode == 0, completed.stderr

    # Without a config the restored copy is checked as stored; encrypted contents are not decrypted.
    code, report = verify_json(target, in_subprocess=True)
    assert code == 0, report
    assert report["documents_checked"] == 3
    assert "document_plaintext_not_checked" in [f["code"] for f in report["findings"]]

    # With the key and trust anchors configured, every plaintext hash and checkpoint signer is checked.
    source_config = load_config(state)
    write_config(target / "qsign.toml", {
        "trust": {"anchors": [str(p) for p in source_config.trust_anchors],
                  "intermediates": [str(p) for p in source_config.intermediates]},
        "archive": {"encryption": "keyfile", "kek_file": str(state / "archive" / "kek.key")},
    })
    code, report = verify_json(target)
    assert code == 0, report
    assert [f["code"] for f in report["findings"]] == ["audit_entries_unsigned"] or \
        finding_codes(report) == []
    with open_archive(target) as archive:
        assert [archive.read_document(sha256) for sha256 in hashes] == DOCUMENTS


def _flip_offsets(backup: Path) -> dict[str, int]:
    with tarfile.open(backup) as tar:
        members = {member.name: member for member in tar.getmembers()}
    document = next(member for name, member in members.items() if name.startswith("documents/"))
    manifest = members["manifest.json"]
    return {
        "document data": document.offset_data + document.size // 2,
        "document header": document.offset + 3,
        "database": members["archive.db"].offset_data + 100,
        "manifest": manifest.offset_data + 10,
        "signature": members["manifest.sig"].offset_data + 40,
        "padding": manifest.offset_data + manifest.size + 1,
        "end of archive": backup.stat().st_size - 1,
    }


@pytest.mark.parametrize("place", ["document data", "document header", "database", "manifest", "signature",
                                   "padding", "end of archive"])
def test_flipped_byte_refused(backed_up, tmp_path: Path, place: str) -> None:
    _state, backup, _hashes = backed_up
    damaged = tmp_path / "damaged.tar"
    data = bytearray(backup.read_bytes())
    data[_flip_offsets(backup)[place]] ^= 0x01
    damaged.write_bytes(bytes(data))
    target = tmp_path / "restored"

    with pytest.raises(BackupInvalid) as raised:
        restore_backup(damaged, target, [], [])

    assert raised.value.code == "backup_invalid"
    assert not (target / "archive").exists()
    assert not any(target.glob(".restore-*"))


def test_random_flipped_bytes_refused(backed_up, tmp_path: Path) -> None:
    import random

    _state, backup, _hashes = backed_up
    original = backup.read_bytes()
    randomness = random.Random(20261204)
    offsets = randomness.sample(range(len(original)), 100)
    # Every byte of the signature file, where base64 and JSON details could hide a change.
    with tarfile.open(backup) as tar:
        signature = tar.getmember("manifest.sig")
    offsets += list(range(signature.offset_data, signature.offset_data + signature.size, 11))
    accepted = []

    for offset in offsets:
        damaged = tmp_path / "damaged.tar"
        data = bytearray(original)
        data[offset] ^= 1 << randomness.randrange(8)
        damaged.write_bytes(bytes(data))
        try:
            restore_backup(damaged, tmp_path / f"restored-{offset}", [], [])
        except BackupInvalid:
            continue
        accepted.append(offset)

    assert accepted == []


def test_flipped_byte_refused_by_cli(backed_up, tmp_path: Path) -> None:
    state, backup, _hashes = backed_up
    damaged = tmp_path / "damaged.tar"
    data = bytearray(backup.read_bytes())
    data[_flip_offsets(backup)["document data"]] ^= 0x80
    damaged.write_bytes(bytes(data))

    completed = run_qsign("archive", "restore", str(damaged), "--to", str(tmp_path / "restored"), "--json",
                          "--lang", "zh_CN", state_dir=state)

    assert completed.returncode == 1
    error = json.loads(completed.stdout)["error"]
    assert error["code"] == "backup_invalid"
    assert "SHA-256" in error["message"]
    assert "备份" in error["message"]


def test_untrusted_signer_refused(backed_up, tmp_path: Path) -> None:
    _state, backup, _hashes = backed_up
    unrelated_anchor = tmp_path / "other-root.pem"
    _write_self_signed(unrelated_anchor)

    with pytest.raises(BackupInvalid) as raised:
        restore_backup(backup, tmp_path / "restored", [unrelated_anchor], [])

    assert "untrusted" in str(raised.value)


def test_restore_into_existing_archive_refused(backed_up, tmp_path: Path) -> None:
    state, backup, _hashes = backed_up
    target = tmp_path / "restored"
    shutil.copytree(state / "archive", target / "archive")

    with pytest.raises(RestoreTargetNotEmpty):
        restore_backup(backup, target, [], [])


def test_backup_without_signer_refused(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state")
    with open_archive(state) as archive:
        archive.store_document(b"doc", "original")

    completed = run_qsign("archive", "backup", "--to", str(tmp_path / "b.tar"), "--json", state_dir=state)

    assert completed.returncode != 0
    assert json.loads(completed.stdout)["error"]["code"] == "archive_signer_unavailable"
    assert not (tmp_path / "b.tar").exists()


def _write_self_signed(path: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unrelated root")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
