"""``qsign verify`` on B-T and B-LT files signed by ``qsign sign`` against the test PKI's services.

The state dir of this module comes from the ``pki_services`` fixture: the OCSP and CRL URLs in its
certificates point at certomancer's animator serving the test PKI on 127.0.0.1. Signing and verifying run
``qsign`` in subprocesses. Offline verification runs with the services stopped, so that any attempt to
fetch would fail.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import jsonschema
import pytest
from conftest import run_qsign
from cryptography import x509
from helpers.pki_rig import PkiServices
from verify_pki import real_pdf

from softhsm_setup.layout import StateLayout
from softhsm_setup.ltv_pki import revoke_certificate


SCHEMA_PATH = Path(__file__).resolve().parent.parent / "verify_service" / "schema" / "report.schema.json"


@pytest.fixture(scope="module")
def pki(pki_services: PkiServices) -> PkiServices:
    return pki_services


def _sign(pki: PkiServices, output: Path, level: str, profile: str = "officer") -> Path:
    completed = run_qsign("sign", str(real_pdf("xiaoshan-sample.pdf")), "-o", str(output), "--profile", profile,
                          "--level", level, "--json", "--lang", "en", state_dir=pki.state_dir)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return output


def _verify(pki: PkiServices, path: Path, *options: str) -> tuple[int, dict]:
    """Run ``qsign verify --json``; check the report against the JSON schema and return it with the exit code."""
    completed = run_qsign("verify", str(path), "--json", *options, state_dir=pki.state_dir)
    assert completed.returncode in (0, 1), completed.stdout + completed.stderr
    report = json.loads(completed.stdout)
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class(schema, format_checker=validator_class.FORMAT_CHECKER).validate(report)
    return completed.returncode, report


@pytest.fixture(scope="module")
def signed(pki: PkiServices, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("verify-ltv-signed")
    pki.start()
    return {level: _sign(pki, directory / f"{level}.pdf", level) for level in ("B-T", "B-LT", "B-LTA")}


def test_b_lt_offline_from_embedded_data(pki: PkiServices, signed: dict[str, Path]) -> None:
    pki.stop()
    exit_code, report = _verify(pki, signed["B-LT"])

    signature = report["signatures"][0]
    assert (report["verdict"], report["sub_indication"]) == ("TOTAL_PASSED", None)
    assert exit_code == 0
    assert report["trust"]["online"] is False
    assert signature["level"] == "B-LT"
    assert signature["trusted"] is True
    revocation = signature["revocation"]
    assert (revocation["status"], revocation["source"]) == ("good", "embedded")
    assert revocation["checked_at"] == report["validation_time"]
    assert [(entry["status"], entry["source"]) for entry in revocation["certificates"]] == \
        [("good", "embedded"), ("good", "embedded")]


def test_b_lta_offline_reports_b_lta(pki: PkiServices, signed: dict[str, Path]) -> None:
    """pyHanko writes the DSS and the document timestamp in one revision; the timestamp covers the DSS."""
    pki.stop()
    exit_code, report = _verify(pki, signed["B-LTA"])

    signatures = {signature["kind"]: signature for signature in report["signatures"]}
    assert (report["verdict"], report["sub_indication"]) == ("TOTAL_PASSED", None)
    assert exit_code == 0
    assert signatures["pdf_signature"]["level"] == "B-LTA"
    assert signatures["pdf_signature"]["revocation"]["source"] == "embedded"
    assert signatures["document_timestamp"]["trusted"] is True


def test_b_lt_offline_later_checked_at_timestamp(pki: PkiServices, signed: dict[str, Path]) -> None:
    """Ten days later the embedded OCSP responses and CRLs are stale. The signature timestamp proves that
    the signature existed when they were fetched, so the path is checked at the timestamp time."""
    pki.stop()
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=10)
    exit_code, report = _verify(pki, signed["B-LT"], "--at", later.isoformat())

    signature = report["signatures"][0]
    assert (report["verdict"], report["sub_indication"]) == ("TOTAL_PASSED", None)
    assert exit_code == 0
    assert signature["revocation"]["status"] == "good"
    assert signature["revocation"]["source"] == "embedded"
    assert signature["revocation"]["checked_at"] == signature["timestamp"]["time"]
    assert any("validated at the timestamp time" in detail for detail in signature["details"])


def test_b_t_offline_indeterminate(pki: PkiServices, signed: dict[str, Path]) -> None:
    """B-T carries a timestamp but no revocation data: offline the signer cannot be checked."""
    pki.stop()
    exit_code, report = _verify(pki, signed["B-T"])

    signature = report["signatures"][0]
    assert (report["verdict"], report["sub_indication"]) == ("INDETERMINATE", "TRY_LATER")
    assert exit_code == 1
    assert signature["level"] == "B-T"
    assert signature["trusted"] is None
    assert signature["revocation"]["status"] == "unknown"
    assert {entry["reason"] for entry in signature["revocation"]["certificates"]} == {"no_revocation_data_offline"}


def test_b_t_online_passes(pki: PkiServices, signed: dict[str, Path]) -> None:
    pki.start()
    exit_code, report = _verify(pki, signed["B-T"], "--online")

    assert (report["verdict"], report["sub_indication"]) == ("TOTAL_PASSED", None)
    assert exit_code == 0
    assert (report["signatures"][0]["revocation"]["status"], report["signatures"][0]["revocation"]["source"]) == \
        ("good", "online")


def test_responders_down_online_indeterminate(pki: PkiServices, signed: dict[str, Path]) -> None:
    pki.stop()
    exit_code, report = _verify(pki, signed["B-T"], "--online")

    signature = report["signatures"][0]
    assert (report["verdict"], report["sub_indication"]) == ("INDETERMINATE", "TRY_LATER")
    assert exit_code == 1
    assert {entry["reason"] for entry in signature["revocation"]["certificates"]} == {"revocation_fetch_failed"}


def test_signer_revoked_after_embedding(pki: PkiServices, tmp_path: Path) -> None:
    """The seal certificate is revoked after a B-LT signature embedded a "good" OCSP response.

    Offline, the report follows the embedded data from signing time: TOTAL_PASSED, revocation good from
    the embedded data. Online, the fresh OCSP response reports the revocation, so the signature is
    INDETERMINATE with REVOKED_NO_POE and the revocation time. Validation at the current time does not
    use the signature timestamp as proof that the signature existed before the revocation.
    """
    pki.start()
    signed_file = _sign(pki, tmp_path / "seal-b-lt.pdf", "B-LT", profile="seal_ec")
    layout = StateLayout(pki.state_dir)
    certificate = x509.load_pem_x509_certificate(layout.end_entity_certificate("seal-ec").read_bytes())
    revoked_at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    revoke_certificate(layout, certificate, revoked_at=revoked_at, reason="key_compromise")

    pki.stop()
    exit_code, offline = _verify(pki, signed_file)
    assert (offline["verdict"], offline["sub_indication"]) == ("TOTAL_PASSED", None)
    assert exit_code == 0
    assert (offline["signatures"][0]["revocation"]["status"], offline["signatures"][0]["revocation"]["source"]) == \
        ("good", "embedded")

    pki.start()
    exit_code, online = _verify(pki, signed_file, "--online")
    signature = online["signatures"][0]
    # When the fetch fails (a loaded machine, a slow restart), the embedded data decide and the
    # signature passes; the revocation record then names "embedded" as the source.
    assert (online["verdict"], online["sub_indication"]) == ("INDETERMINATE", "REVOKED_NO_POE"), \
        signature["revocation"]
    assert exit_code == 1
    assert signature["trusted"] is False
    assert (signature["revocation"]["status"], signature["revocation"]["source"]) == ("revoked", "online")
    signer_entry, intermediate_entry = signature["revocation"]["certificates"]
    assert (signer_entry["status"], signer_entry["reason"]) == ("revoked", "revoked")
    assert signer_entry["revocation_time"] == revoked_at.isoformat()
    assert signer_entry["subject"] == signature["signer"]
    assert intermediate_entry["status"] == "good"


def test_b_lt_needs_data_for_that_signer(pki: PkiServices, tmp_path: Path) -> None:
    """A seal at B-LT after an officer's B-T signature puts only the seal's OCSP responses into the DSS:
    the officer's signature stays B-T although the file has a DSS. (seal-ec is revoked by an earlier test.)"""
    pki.start()
    officer = _sign(pki, tmp_path / "officer-b-t.pdf", "B-T")
    completed = run_qsign("sign", str(officer), "-o", str(tmp_path / "sealed-b-lt.pdf"), "--profile", "seal",
                          "--level", "B-LT", "--json", "--lang", "en", state_dir=pki.state_dir)
    assert completed.returncode == 0, completed.stdout + completed.stderr

    _, report = _verify(pki, tmp_path / "sealed-b-lt.pdf", "--online")
    levels = [signature["level"] for signature in report["signatures"] if signature["kind"] == "pdf_signature"]
    assert levels == ["B-T", "B-LT"]
