"""PAdES B-B/B-T/B-LT/B-LTA against the test PKI's OCSP, CRL and TSA services on 127.0.0.1.

The state dir of this module comes from the ``pki_services`` fixture: its certificates name a free port
on 127.0.0.1 where certomancer's animator serves the test PKI. Signatures go through ``qsign sign`` in
a subprocess, because this process may already have SoftHSM2 loaded for another state dir.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from freezegun import freeze_time
from asn1crypto import keys as asn1_keys
from asn1crypto import pem, tsp
from asn1crypto import x509 as asn1_x509
from certomancer.services import TimeStamper
from cryptography import x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature, validate_pdf_timestamp
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko_certvalidator import ValidationContext
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from archive.api import Archive, DocumentKind
from archive.renew import RENEWED_ACTION, find_due, renew_due
from qsign.config import load_config
from qsign.errors import ConfigError
from signing.levels import Level, revocation_check_configured
from signing.ltv import LOCAL_ONLY_REVOCATION_POLICY, load_certificates, tsa_trust_context
from signing.ltv_errors import TsaResponseInvalid, TsaUnavailable
from signing.tsa import QsignTimeStamper, TsaSettings
from softhsm_setup.layout import StateLayout
from softhsm_setup.ltv_pki import revoke_certificate
from verify_service.validate import FETCH_TIME_TOLERANCE
from conftest import run_qsign
from helpers.pki_rig import PkiServices, free_port

PDF = Path(__file__).parent / "data" / "real" / "xiaoshan-sample.pdf"


@pytest.fixture(scope="module")
def pki(pki_services: PkiServices) -> PkiServices:
    return pki_services


@pytest.fixture
def running(pki: PkiServices) -> PkiServices:
    pki.start()
    return pki


def _sign(pki: PkiServices, output: Path, level: str, profile: str = "officer", *options: str,
          source: Path = PDF) -> subprocess.CompletedProcess[str]:
    return run_qsign("sign", str(source), "-o", str(output), "--profile", profile, "--level", level, "--json",
                     "--lang", "en", *options, state_dir=pki.state_dir)


def _roots(pki: PkiServices) -> list:
    return load_certificates([pki.state_dir / "pki" / "root-ca.pem"])


def _offline_context(pki: PkiServices, reader: PdfFileReader) -> ValidationContext:
    kwargs = {"trust_roots": _roots(pki), "allow_fetching": False, "revinfo_policy": LOCAL_ONLY_REVOCATION_POLICY}
    return DocumentSecurityStore.read_dss(reader).as_validation_context(kwargs)


def _pyhanko_validate(pki: PkiServices, path: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "pyhanko"), "sign", "validate", "--trust-replace", "--trust",
               str(pki.state_dir / "pki" / "root-ca.pem"), "--executive-summary", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def signed(pki: PkiServices, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pki.start()
    directory = tmp_path_factory.mktemp("ltv-signed")
    outputs = {}
    for level in Level:
        output = directory / f"{level.value}.pdf"
        completed = _sign(pki, output, level.value)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        outputs[level.value] = output
    return outputs


def test_each_level_passes_pyhanko_cli(running: PkiServices, signed: dict[str, Path]):
    for level, path in signed.items():
        completed = _pyhanko_validate(running, path)
        assert completed.returncode == 0, f"{level}: {completed.stdout}{completed.stderr}"
        assert ":VALID" in completed.stdout, f"{level}: {completed.stdout}"


@pytest.mark.parametrize("level", [level.value for level in Level])
def test_verify_service_reports_level(pki: PkiServices, signed: dict[str, Path], level: str):
    """qsign verify reports each file TOTAL_PASSED at the level it was signed at; B-LT and B-LTA with
    the responders down (embedded data only), B-B and B-T online."""
    long_term = level in ("B-LT", "B-LTA")
    if long_term:
        pki.stop()
    else:
        pki.start()
    options = () if long_term else ("--online",)
    completed = run_qsign("verify", str(signed[level]), "--json", *options, state_dir=pki.state_dir)
    pki.start()
    report = json.loads(completed.stdout)
    signatures = [signature for signature in report["signatures"] if signature["kind"] == "pdf_signature"]

    assert (report["verdict"], report["sub_indication"]) == ("TOTAL_PASSED", None), completed.stdout
    assert [signature["level"] for signature in signatures] == [level]
    assert signatures[0]["revocation"]["source"] == ("embedded" if long_term else "online")


def test_b_t_has_trusted_signature_timestamp(running: PkiServices, signed: dict[str, Path]):
    with signed["B-T"].open("rb") as handle:
        reader = PdfFileReader(handle)
        context = ValidationContext(trust_roots=_roots(running), allow_fetching=True,
                                    time_tolerance=FETCH_TIME_TOLERANCE)
        status = validate_pdf_signature(reader.embedded_signatures[0], signer_validation_context=context,
                                        ts_validation_context=context)
        assert status.bottom_line
        assert status.timestamp_validity is not None
        assert status.timestamp_validity.trusted


def test_b_b_has_no_timestamp(running: PkiServices, signed: dict[str, Path]):
    with signed["B-B"].open("rb") as handle:
        reader = PdfFileReader(handle)
        status = validate_pdf_signature(reader.embedded_signatures[0],
                                        signer_validation_context=ValidationContext(trust_roots=_roots(running)))
        assert status.bottom_line
        assert status.timestamp_validity is None
        assert reader.embedded_timestamp_signatures == []


def test_b_lt_and_b_lta_validate_offline(pki: PkiServices, signed: dict[str, Path]):
    pki.stop()
    for level in ("B-LT", "B-LTA"):
        with signed[level].open("rb") as handle:
            reader = PdfFileReader(handle)
            dss = DocumentSecurityStore.read_dss(reader)
            assert len(dss.ocsps) >= 2, f"{level}: OCSP responses for signer and TSA expected in the DSS"
            status = validate_pdf_signature(reader.embedded_signatures[0],
                                            signer_validation_context=_offline_context(pki, reader),
                                            ts_validation_context=_offline_context(pki, reader))
            assert status.bottom_line, f"{level}: {status.pretty_print_details()}"
            assert status.timestamp_validity.trusted

            document_timestamps = reader.embedded_timestamp_signatures
            if level == "B-LT":
                assert document_timestamps == []
            else:
                assert len(document_timestamps) == 1
                timestamp_status = validate_pdf_timestamp(document_timestamps[0],
                                                          validation_context=_offline_context(pki, reader))
                assert timestamp_status.valid
                assert timestamp_status.trusted


def test_responders_down_fail_clearly(pki: PkiServices, tmp_path: Path):
    pki.stop()
    output = tmp_path / "out.pdf"

    completed = _sign(pki, output, "B-LT")
    assert completed.returncode != 0
    assert json.loads(completed.stdout)["error"]["code"] == "revocation_unavailable"
    assert not output.exists()

    completed = _sign(pki, output, "B-T")
    assert completed.returncode != 0
    assert json.loads(completed.stdout)["error"]["code"] == "tsa_unavailable"
    assert not output.exists()


def test_revoked_signer_refused_and_reported(running: PkiServices, tmp_path: Path):
    before = tmp_path / "before-revocation.pdf"
    completed = _sign(running, before, "B-T", profile="seal_ec")
    assert completed.returncode == 0, completed.stdout + completed.stderr

    layout = StateLayout(running.state_dir)
    certificate = x509.load_pem_x509_certificate(layout.end_entity_certificate("seal-ec").read_bytes())
    revoked_at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    revoke_certificate(layout, certificate, revoked_at=revoked_at, reason="key_compromise")

    after = tmp_path / "after-revocation.pdf"
    completed = _sign(running, after, "B-LT", profile="seal_ec")
    assert completed.returncode != 0
    error = json.loads(completed.stdout)["error"]
    assert error["code"] == "signer_revoked"
    assert error["ids"]["revoked_at"] == revoked_at.isoformat()
    assert not after.exists()

    # B-B and B-T check only on request; CAdES goes through pyhanko-certvalidator instead of pyHanko's signer.
    attachment = tmp_path / "attachment.xml"
    attachment.write_text("<申报>1</申报>\n", encoding="utf-8")
    for level, output, source in (("B-B", after, PDF), ("B-T", after, PDF),
                                  ("B-T", tmp_path / "attachment.xml.p7s", attachment)):
        completed = _sign(running, output, level, "seal_ec", "--check-revocation", source=source)
        assert completed.returncode != 0, (level, source)
        error = json.loads(completed.stdout)["error"]
        assert error["code"] == "signer_revoked", (level, source, error)
        assert error["ids"]["revoked_at"] == revoked_at.isoformat()
        assert not output.exists()

    with before.open("rb") as handle:
        reader = PdfFileReader(handle)
        context = ValidationContext(trust_roots=_roots(running), allow_fetching=True,
                                    time_tolerance=FETCH_TIME_TOLERANCE)
        status = validate_pdf_signature(reader.embedded_signatures[0], signer_validation_context=context)
        assert not status.bottom_line
        assert status.revocation_details is not None
        assert status.revocation_details.revocation_date == revoked_at
        assert status.revocation_details.revocation_reason.native == "key_compromise"


class _MisbehavingTsa:
    """A TSA that signs with the real TSA key but changes the nonce or the imprint of the request."""

    def __init__(self, state_dir: Path, fault: str) -> None:
        tsa_certificate = pem.unarmor((state_dir / "pki" / "tsa.pem").read_bytes())[2]
        tsa_key = pem.unarmor((state_dir / "pki" / "tsa.key.pem").read_bytes())[2]
        self.stamper = TimeStamper(asn1_x509.Certificate.load(tsa_certificate),
                                   asn1_keys.PrivateKeyInfo.load(tsa_key))
        self.fault = fault
        self.server = make_server("127.0.0.1", 0, self._app)
        self.url = f"http://127.0.0.1:{self.server.server_port}/tsa"

    def _app(self, environ, start_response):
        request = tsp.TimeStampReq.load(Request(environ).get_data())
        if self.fault == "nonce":
            request["nonce"] = request["nonce"].native + 1
        else:
            request["message_imprint"]["hashed_message"] = hashlib.sha256(b"other data").digest()
        body = self.stamper.request_tsa_response(request).dump()
        return Response(body, mimetype="application/timestamp-reply")(environ, start_response)

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("fault,text", [("nonce", "nonce mismatch"), ("imprint", "message imprint")])
def test_misbehaving_tsa_rejected(pki: PkiServices, fault: str, text: str):
    config = load_config(pki.state_dir)
    with _MisbehavingTsa(pki.state_dir, fault) as tsa:
        settings = TsaSettings(url=tsa.url, retries=0)
        stamper = QsignTimeStamper(settings, tsa_trust_context(config))
        with pytest.raises(TsaResponseInvalid) as raised:
            asyncio.run(stamper.async_timestamp(hashlib.sha256(b"document").digest(), "sha256"))
        assert text in raised.value.message("en")


def test_untrusted_tsa_rejected(running: PkiServices):
    no_anchors = ValidationContext(trust_roots=[], allow_fetching=False)
    settings = TsaSettings(url=running.server.urls.tsa_url, retries=0)
    with pytest.raises(TsaResponseInvalid) as raised:
        asyncio.run(QsignTimeStamper(settings, no_anchors).async_timestamp(hashlib.sha256(b"x").digest(), "sha256"))
    assert "trust anchor" in raised.value.message("en")


def test_tsa_retries_then_unavailable():
    port = free_port()
    settings = TsaSettings(url=f"http://127.0.0.1:{port}/tsa", retries=2, backoff=0.05, timeout=2)
    with pytest.raises(TsaUnavailable) as raised:
        asyncio.run(QsignTimeStamper(settings, None).async_timestamp(hashlib.sha256(b"x").digest(), "sha256"))
    assert "after 3 attempts" in raised.value.message("en")


def test_renewal_before_tsa_expiry(running: PkiServices, signed: dict[str, Path]):
    tsa_certificate = x509.load_pem_x509_certificate((running.state_dir / "pki" / "tsa.pem").read_bytes())
    with Archive.open(running.state_dir) as archive:
        record = archive.store_document(signed["B-LTA"].read_bytes(), DocumentKind.SIGNED,
                                        media_type="application/pdf", actor="test")
        # Time travel: today nothing is due within 30 days; 20 days before the TSA certificate expires it is.
        assert record.sha256 not in {item.sha256 for item in find_due(archive, 30)}
        near_expiry = tsa_certificate.not_valid_after_utc - datetime.timedelta(days=20)
        assert record.sha256 in {item.sha256 for item in find_due(archive, 30, now=near_expiry)}

    window = (tsa_certificate.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)).days + 1
    completed = run_qsign("archive", "renew", "--before", str(window), "--json", state_dir=running.state_dir)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    renewed = {item["previous_sha256"]: item["sha256"] for item in json.loads(completed.stdout)["renewed"]}
    assert record.sha256 in renewed

    with Archive.open(running.state_dir) as archive:
        new_data = archive.read_document(renewed[record.sha256])
        actions = [entry.action for entry in archive.audit_entries()]
        assert RENEWED_ACTION in actions

    original = signed["B-LTA"].read_bytes()
    assert new_data.startswith(original)
    running.stop()
    reader = PdfFileReader(io.BytesIO(new_data))
    assert len(reader.embedded_timestamp_signatures) == 2
    status = validate_pdf_signature(reader.embedded_signatures[0],
                                    signer_validation_context=_offline_context(running, reader),
                                    ts_validation_context=_offline_context(running, reader))
    assert status.bottom_line
    for timestamp in reader.embedded_timestamp_signatures:
        timestamp_status = validate_pdf_timestamp(timestamp, validation_context=_offline_context(running, reader))
        assert timestamp_status.trusted


def test_renewal_on_moved_clock(running: PkiServices, tmp_path: Path):
    """Renew at a time 20 days before the TSA certificate expires: certomancer's animator responds for that
    time (its time travel) and freezegun moves this process's clock, which pyHanko validates against."""
    signed_file = tmp_path / "b-lta.pdf"
    completed = _sign(running, signed_file, "B-LTA")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    tsa_certificate = x509.load_pem_x509_certificate((running.state_dir / "pki" / "tsa.pem").read_bytes())
    near_expiry = tsa_certificate.not_valid_after_utc - datetime.timedelta(days=20)
    with Archive.open(running.state_dir) as archive:
        record = archive.store_document(signed_file.read_bytes(), DocumentKind.SIGNED, media_type="application/pdf",
                                        actor="test")

    running.server.at_time = near_expiry
    try:
        with freeze_time(near_expiry, tick=True, real_asyncio=True):
            config = load_config(running.state_dir)
            with Archive.open(running.state_dir) as archive:
                assert record.sha256 in {item.sha256 for item in find_due(archive, 30)}
                renewed, failed = renew_due(archive, config, 30, actor="test")
                # Documents that earlier tests archived with the same TSA are due as well.
                by_previous = {result.previous_sha256: result.sha256 for result in renewed}
                assert record.sha256 in by_previous
                new_data = archive.read_document(by_previous[record.sha256])
    finally:
        running.server.at_time = None
    assert failed == []
    assert new_data.startswith(signed_file.read_bytes())

    renewed_file = tmp_path / "b-lta-renewed.pdf"
    renewed_file.write_bytes(new_data)
    running.stop()
    completed = run_qsign("verify", str(renewed_file), "--json", "--at", (near_expiry + datetime.timedelta(hours=1))
                          .isoformat(), state_dir=running.state_dir)
    report = json.loads(completed.stdout)
    signatures = [signature for signature in report["signatures"] if signature["kind"] == "pdf_signature"]
    assert (report["verdict"], report["sub_indication"]) == ("TOTAL_PASSED", None), completed.stdout
    assert [signature["level"] for signature in signatures] == ["B-LTA"]
    stamp_times = [datetime.datetime.fromisoformat(signature["timestamp_time"])
                   for signature in report["signatures"] if signature["kind"] == "document_timestamp"]
    assert len(stamp_times) == 2
    assert stamp_times[0] < near_expiry - datetime.timedelta(days=365)
    assert abs(stamp_times[1] - near_expiry) < datetime.timedelta(minutes=5)


@pytest.mark.parametrize(("table", "expected"), [
    ("", False),
    ("[signing]\ncheck_revocation = true\n", True),
    ("[signing]\ncheck_revocation = false\n", False),
    ("[signing]\ncheck_revocation = \"yes\"\n", "signing.check_revocation must be true or false"),
    ("[signing]\ncheck_revocations = true\n", "unknown key signing.check_revocations"),
])
def test_signing_check_revocation_setting(tmp_path: Path, table: str, expected):
    (tmp_path / "qsign.toml").write_text(table, encoding="utf-8")
    config = load_config(tmp_path)
    if isinstance(expected, bool):
        assert revocation_check_configured(config) is expected
        return
    with pytest.raises(ConfigError) as raised:
        revocation_check_configured(config)
    assert expected in raised.value.message("en")
