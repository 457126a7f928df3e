"""Bulk sealing at levels B-LT and B-LTA, with every output validated offline.

The module makes its own state dir whose certificates name a test PKI (OCSP responder, CRLs, TSA)
on a free port of 127.0.0.1. The PKI serves the sealing jobs and is then stopped, so the outputs
must validate from the validation data they carry: pyHanko with
``signing.ltv.offline_validation_context`` (no fetching, revocation data required wherever a
certificate names a responder or CRL), and ``qsign verify --json`` without ``--online``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from pathlib import Path

import pytest
from asn1crypto import crl, ocsp
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import async_validate_pdf_signature, async_validate_pdf_timestamp
from pyhanko.sign.validation.dss import DocumentSecurityStore

from conftest import run_qsign
from signing.ltv import load_certificates, offline_validation_context
from softhsm_setup.pki_server import PkiServer

SAMPLE = Path(__file__).parent / "data" / "real" / "xiaoshan-sample.pdf"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[Path]]]:
    """Seal 3 documents at B-LT and 3 at B-LTA with the PKI up; return (state dir, outputs) by level."""
    state_dir = tmp_path_factory.mktemp("bulk-ltv-state")
    work = tmp_path_factory.mktemp("bulk-ltv-work")
    port = _free_port()
    completed = run_qsign("softhsm", "init", "--json", "--pki-base-url", f"http://127.0.0.1:{port}",
                          state_dir=state_dir)
    assert completed.returncode == 0, completed.stderr
    config_path = state_dir / "qsign.toml"
    config_path.write_text(config_path.read_text(encoding="utf-8")
                           + '\n[profiles.seal_lt]\ntoken = "seal"\nlevel = "B-LT"\n'
                           + '\n[profiles.seal_lta]\ntoken = "seal"\nlevel = "B-LTA"\n', encoding="utf-8")
    server = PkiServer(state_dir, "127.0.0.1", port).start()
    results = {}
    try:
        for level, profile in (("B-LT", "seal_lt"), ("B-LTA", "seal_lta")):
            inputs, out_dir = work / f"in-{profile}", work / f"out-{profile}"
            inputs.mkdir()
            for number in range(3):
                shutil.copyfile(SAMPLE, inputs / f"notice-{number}.pdf")
            completed = run_qsign("bulk", "sign", str(inputs), "--profile", profile, "--out", str(out_dir),
                                  "--workers", "2", "--json", "--lang", "en", state_dir=state_dir, timeout=180)
            assert completed.returncode == 0, completed.stderr
            job_id = json.loads(completed.stdout.splitlines()[0])["job"]
            status = run_qsign("bulk", "status", job_id, "--json", state_dir=state_dir)
            assert json.loads(status.stdout)["counts"]["recorded"] == 3, status.stdout
            outputs = sorted(out_dir.rglob("notice-*.pdf"))
            assert len(outputs) == 3
            assert not (out_dir / ".qsign-partial" / job_id).exists()
            results[level] = outputs
    finally:
        server.stop()
    with socket.socket() as probe:  # the PKI is down: nothing answers on its port
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return {"state": state_dir, **results}


def _validate_offline(path: Path, state_dir: Path):
    """Validate with the trust anchors and the revocation data of the file's DSS only."""
    roots = load_certificates([state_dir / "pki" / "root-ca.pem"])
    intermediates = load_certificates([state_dir / "pki" / "intermediate-ca.pem"])

    async def validate():
        with path.open("rb") as handle:
            reader = PdfFileReader(handle)
            signatures = reader.embedded_regular_signatures
            timestamps = reader.embedded_timestamp_signatures
            dss = DocumentSecurityStore.read_dss(reader)
            has_dss = bool(dss.ocsps or dss.crls)
            ocsps = [ocsp.OCSPResponse.load(ref.get_object().data) for ref in dss.ocsps]
            crls = [crl.CertificateList.load(ref.get_object().data) for ref in dss.crls]
            certificates = intermediates + list(dss.load_certs())

            def context():
                return offline_validation_context(roots, certificates, ocsps=ocsps, crls=crls)

            statuses = [await async_validate_pdf_signature(signature, context(), ts_validation_context=context())
                        for signature in signatures]
            timestamp_statuses = [await async_validate_pdf_timestamp(timestamp, context())
                                  for timestamp in timestamps]
            return has_dss, statuses, timestamp_statuses

    return asyncio.run(validate())


@pytest.mark.parametrize("level", ["B-LT", "B-LTA"])
def test_bulk_long_term_outputs_validate_offline(sealed, level):
    state_dir = sealed["state"]
    for output in sealed[level]:
        has_dss, statuses, timestamp_statuses = _validate_offline(output, state_dir)
        assert has_dss, f"{output.name}: no revocation data in the document security store"
        assert len(statuses) == 1, output.name
        status = statuses[0]
        assert status.bottom_line, f"{output.name}: {status.summary()}"
        assert status.revocation_details is None or not status.revocation_details.revoked
        assert status.timestamp_validity is not None and status.timestamp_validity.trusted, output.name
        assert len(timestamp_statuses) == (1 if level == "B-LTA" else 0), output.name
        for timestamp in timestamp_statuses:
            assert timestamp.valid and timestamp.intact and timestamp.trusted, output.name

        completed = run_qsign("verify", str(output), "--json", "--lang", "en", state_dir=state_dir)
        report = json.loads(completed.stdout)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert report["verdict"] == "TOTAL_PASSED", completed.stdout
        assert report["signatures"][0]["level"] == level, completed.stdout


def test_bulk_b_b_refuses_revoked_seal(pki_services, tmp_path: Path):
    """With [signing] check_revocation a B-B bulk worker checks the seal certificate once before sealing."""
    import datetime

    from cryptography import x509

    from softhsm_setup.layout import StateLayout
    from softhsm_setup.ltv_pki import revoke_certificate

    state_dir = pki_services.state_dir
    config_path = state_dir / "qsign.toml"
    config_path.write_text(config_path.read_text(encoding="utf-8") + "\n[signing]\ncheck_revocation = true\n",
                           encoding="utf-8")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copyfile(SAMPLE, inputs / "notice.pdf")

    def bulk_sign(out_dir: Path):
        return run_qsign("bulk", "sign", str(inputs), "--profile", "seal", "--out", str(out_dir), "--workers", "1",
                         "--json", "--lang", "en", state_dir=state_dir, timeout=180)

    completed = bulk_sign(tmp_path / "out-before")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert len(list((tmp_path / "out-before").rglob("notice.pdf"))) == 1

    layout = StateLayout(state_dir)
    certificate = x509.load_pem_x509_certificate(layout.end_entity_certificate("seal-rsa").read_bytes())
    revoke_certificate(layout, certificate, revoked_at=datetime.datetime.now(datetime.timezone.utc),
                       reason="key_compromise")
    completed = bulk_sign(tmp_path / "out-after")
    assert completed.returncode != 0, completed.stdout
    assert "signer_revoked" in completed.stdout + completed.stderr
    assert list((tmp_path / "out-after").rglob("notice.pdf")) == []
