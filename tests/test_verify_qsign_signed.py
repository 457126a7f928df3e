"""``qsign verify`` on files signed by ``qsign sign`` with the SoftHSM2 tokens of ``softhsm_state``.

Both commands run as subprocesses, so this test process never loads a PKCS#11 module. The certificates
of ``qsign softhsm init`` name the test PKI's OCSP responder and CRLs, so validation needs revocation
data: this module makes its own state dir with ``--pki-base-url`` on a free port, serves the PKI there
on 127.0.0.1 with ``PkiServer``, and verifies with ``--online``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_qsign
from verify_pki import real_pdf

from qsign.config import load_config
from softhsm_setup.ltv_pki import PkiUrls
from softhsm_setup.pki_server import PkiServer


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def softhsm_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir of ``qsign softhsm init`` whose certificates name a PKI base URL on a free port."""
    state_dir = tmp_path_factory.mktemp("verify-qsign-state")
    completed = run_qsign("softhsm", "init", "--json", "--pki-base-url", f"http://127.0.0.1:{_free_port()}",
                          state_dir=state_dir)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return state_dir


@pytest.fixture(scope="module")
def pki_services(softhsm_state: Path) -> Iterator[PkiServer]:
    """The OCSP responder, CRLs and TSA of ``softhsm_state`` at the base URL its certificates name."""
    port = PkiUrls.parse(load_config(softhsm_state).section("pki")["base_url"]).port
    server = PkiServer(softhsm_state, "127.0.0.1", port).start()
    yield server
    server.stop()


@pytest.mark.parametrize("profile", ["officer", "officer_ec", "seal"])
def test_qsign_pades_valid(softhsm_state: Path, pki_services: PkiServer, tmp_path: Path, profile: str) -> None:
    signed = tmp_path / f"{profile}.pdf"
    signing = run_qsign("sign", str(real_pdf("xiaoshan-sample.pdf")), "-o", str(signed), "--profile", profile,
                        state_dir=softhsm_state)
    assert signing.returncode == 0, signing.stderr

    verifying = run_qsign("verify", str(signed), "--json", "--online", state_dir=softhsm_state)

    assert verifying.returncode == 0, verifying.stdout + verifying.stderr
    report = json.loads(verifying.stdout)
    assert report["verdict"] == "TOTAL_PASSED"
    assert report["trust"]["source"] == "config"
    assert report["signatures"][0]["trusted"] is True
    revocation = report["signatures"][0]["revocation"]
    assert (revocation["status"], revocation["source"]) == ("good", "online")
    assert [entry["status"] for entry in revocation["certificates"]] == ["good", "good"]


def test_qsign_b_b_offline_indeterminate(softhsm_state: Path, tmp_path: Path) -> None:
    """A B-B signature carries no revocation data: offline, the signer and intermediate CA cannot be
    checked, so the verdict is INDETERMINATE (TRY_LATER) and the exit code 1."""
    signed = tmp_path / "officer-b-b.pdf"
    signing = run_qsign("sign", str(real_pdf("xiaoshan-sample.pdf")), "-o", str(signed), "--profile", "officer",
                        state_dir=softhsm_state)
    assert signing.returncode == 0, signing.stderr

    verifying = run_qsign("verify", str(signed), "--json", state_dir=softhsm_state)

    assert verifying.returncode == 1, verifying.stdout + verifying.stderr
    report = json.loads(verifying.stdout)
    signature = report["signatures"][0]
    assert (report["verdict"], report["sub_indication"]) == ("INDETERMINATE", "TRY_LATER")
    assert signature["trusted"] is None
    assert signature["revocation"]["status"] == "unknown"
    reasons = {entry["subject"].split(",")[0]: entry["reason"] for entry in signature["revocation"]["certificates"]}
    assert set(reasons.values()) == {"no_revocation_data_offline"}
    assert len(reasons) == 2


def test_qsign_cades_detached_valid(softhsm_state: Path, pki_services: PkiServer, tmp_path: Path) -> None:
    content = tmp_path / "notice.txt"
    content.write_text("国家税务总局测试通知\n", encoding="utf-8")
    signature = tmp_path / "notice.txt.p7s"
    signing = run_qsign("sign", str(content), "-o", str(signature), "--profile", "officer",
                        state_dir=softhsm_state)
    assert signing.returncode == 0, signing.stderr

    verifying = run_qsign("verify", str(signature), "--content", str(content), "--json", "--online",
                          state_dir=softhsm_state)

    assert verifying.returncode == 0, verifying.stdout + verifying.stderr
    assert json.loads(verifying.stdout)["verdict"] == "TOTAL_PASSED"
