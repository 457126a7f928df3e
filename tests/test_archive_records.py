"""Records the agent and bulk sealing keep: requests, devices, jobs; lookups; retention; translations."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from archive.errors import RecordNotFound
from conftest import run_qsign
from helpers.archive_state import database, finding_codes, make_archive_state, open_archive, verify_json


def test_request_lifecycle_and_find(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state")
    with open_archive(state) as archive:
        with archive.transaction() as tx:
            tx.register_device("phone-1", name="Li's phone", owner="officer:li", token_hash="sha256:abc")
            tx.audit("officer:li", "device.paired", device="phone-1")
        original = archive.store_document(b"%PDF original", "original", template_id="notice",
                                          actor="officer:li", device="phone-1", object_ids={"request_id": "r-1"})
        with archive.transaction() as tx:
            tx.create_request("r-1", state="uploaded", template_id="notice", requester="officer:li",
                              device_id="phone-1", file_name="notice.pdf", original_sha256=original.sha256)
            tx.audit("officer:li", "request.created", device="phone-1", object_ids={"request_id": "r-1"},
                     document_hashes=[original.sha256])
        signed = archive.store_document(b"%PDF signed", "signed", template_id="notice")
        with archive.transaction() as tx:
            request = tx.update_request("r-1", state="signed", signed_sha256=signed.sha256,
                                        attributes={"pades_level": "B-T"})
            tx.audit("officer:li", "request.signed", device="phone-1", object_ids={"request_id": "r-1"},
                     document_hashes=[original.sha256, signed.sha256])
            device = tx.update_device("phone-1", seen=True)

    assert request.state == "signed"
    assert request.attributes == {"pades_level": "B-T"}
    assert device.last_seen_at is not None

    completed = run_qsign("archive", "find", "--request", "r-1", "--json", state_dir=state)
    assert completed.returncode == 0, completed.stderr
    found = json.loads(completed.stdout)
    assert found["request"]["signed_sha256"] == signed.sha256
    assert [d["sha256"] for d in found["documents"]] == [original.sha256, signed.sha256]
    assert [e["action"] for e in found["audit"]] == ["document.stored", "request.created", "request.signed"]

    completed = run_qsign("archive", "find", "--sha256", original.sha256.upper(), "--lang", "zh_CN",
                          state_dir=state)
    assert completed.returncode == 0, completed.stderr
    assert "r-1" in completed.stdout
    assert "条审计条目" in completed.stdout


def test_find_unknown_document_exits_1(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state")

    completed = run_qsign("archive", "find", "--sha256", "ab" * 32, state_dir=state)
    bad = run_qsign("archive", "find", "--sha256", "xyz", "--json", state_dir=state)

    assert completed.returncode == 1
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["error"]["code"] == "invalid_sha256"


def test_job_items_resume_state(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state")
    with open_archive(state) as archive:
        first = archive.store_document(b"input 1", "original")
        with archive.transaction() as tx:
            tx.create_job("job-1", state="running", profile="seal", total=2)
            tx.set_job_item("job-1", "in/a.pdf", state="prepared", input_sha256=first.sha256)
            tx.set_job_item("job-1", "in/b.pdf", state="pending")
        output = archive.store_document(b"output 1", "signed")
        with archive.transaction() as tx:
            item = tx.set_job_item("job-1", "in/a.pdf", state="written", output_sha256=output.sha256)
            pending = tx.get_job_items("job-1", state="pending")
            job = tx.update_job("job-1", attributes={"rate": 12.5})

    assert item.input_sha256 == first.sha256
    assert item.output_sha256 == output.sha256
    assert [i.item_key for i in pending] == ["in/b.pdf"]
    assert job.attributes == {"rate": 12.5}


def test_foreign_keys_enforced(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state")
    with open_archive(state) as archive:
        with pytest.raises(IntegrityError):
            with archive.transaction() as tx:
                tx.create_request("r-x", state="uploaded", original_sha256="0" * 64)
        with pytest.raises(RecordNotFound):
            with archive.transaction() as tx:
                tx.get_request("r-x")


def test_failed_transaction_keeps_nothing(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state")
    with open_archive(state) as archive:
        with pytest.raises(RuntimeError):
            with archive.transaction() as tx:
                tx.audit("officer:li", "request.created", object_ids={"request_id": "r-2"})
                raise RuntimeError("policy check failed after the entry")
        archive.audit("officer:li", "request.created", object_ids={"request_id": "r-3"})
        entries = archive.audit_entries()

    assert [(e.seq, e.object_ids["request_id"]) for e in entries] == [(1, "r-3")]


def _age(state: Path, sha256: str, days: int) -> None:
    stored_at = (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with database(state) as connection:
        connection.execute("UPDATE documents SET stored_at = ? WHERE sha256 = ?", (stored_at, sha256))


def test_prune_respects_templates_and_legal_holds(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_archive(make_archive_state(state)) as archive:
        held_by_config = archive.store_document(b"C config hold", "signed").sha256
    make_archive_state(state, retention_days=365, template_retention_days={"short": 30},
                       legal_holds=[held_by_config, "request:r-held"])

    with open_archive(state) as archive:
        docs = {
            "short_old": archive.store_document(b"A", "signed", template_id="short").sha256,
            "short_new": archive.store_document(b"B", "signed", template_id="short").sha256,
            "plain_old": archive.store_document(b"D", "signed").sha256,
            "held_in_db": archive.store_document(b"E", "signed").sha256,
            "held_by_request": archive.store_document(b"F", "original").sha256,
            "week_old": archive.store_document(b"G", "signed").sha256,
        }
        archive.set_legal_hold(docs["held_in_db"], True, actor="auditor:wang", reason="case 2026-17")
        with archive.transaction() as tx:
            tx.create_request("r-held", state="signed", original_sha256=docs["held_by_request"])
    for name, days in [("short_old", 40), ("short_new", 10), ("plain_old", 400), ("held_in_db", 400),
                       ("held_by_request", 400), ("week_old", 7)]:
        _age(state, docs[name], days)
    _age(state, held_by_config, 400)

    dry = run_qsign("archive", "prune", "--dry-run", "--json", state_dir=state)
    assert dry.returncode == 0, dry.stderr
    assert {d["sha256"] for d in json.loads(dry.stdout)["documents"]} == {docs["short_old"], docs["plain_old"]}

    pruned = run_qsign("archive", "prune", "--json", state_dir=state)
    assert pruned.returncode == 0, pruned.stderr
    assert {d["sha256"] for d in json.loads(pruned.stdout)["documents"]} == {docs["short_old"], docs["plain_old"]}

    shorter = run_qsign("archive", "prune", "--older-than", "5", "--json", state_dir=state)
    assert {d["sha256"] for d in json.loads(shorter.stdout)["documents"]} == {docs["week_old"]}

    with open_archive(state) as archive:
        for name in ("short_old", "plain_old", "week_old"):
            assert not archive.store.exists(docs[name])
            assert archive.get_document(docs[name]).pruned_at is not None
        for sha256 in (docs["short_new"], docs["held_in_db"], docs["held_by_request"], held_by_config):
            assert archive.store.exists(sha256)
        removals = archive.audit_entries(action="document.pruned")
    assert sorted(e.document_hashes[0] for e in removals) == sorted(
        [docs["short_old"], docs["plain_old"], docs["week_old"]])

    code, report = verify_json(state)
    assert code == 0, report
    assert finding_codes(report) == []


def test_zh_cn_catalog_covers_every_archive_message() -> None:
    from babel.messages.extract import extract_from_dir

    from qsign.i18n import translate

    archive_dir = Path(__file__).resolve().parent.parent / "archive"
    messages = {message for _file, _line, message, _comments, _context in
                extract_from_dir(str(archive_dir), method_map=[("**.py", "python")], keywords={"N_": None})}

    untranslated = sorted(message for message in messages if translate(message, "zh_CN") == message)
    assert len(messages) > 80
    assert untranslated == []
