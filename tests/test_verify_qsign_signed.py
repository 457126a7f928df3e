"""``qsign verify`` on files signed by ``qsign sign`` with the SoftHSM2 tokens of ``softhsm_state``.

Both commands run as subprocesses, so this test process never loads a PKCS#11 module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_qsign
from verify_pki import real_pdf


@pytest.mark.parametrize("profile", ["officer", "officer_ec", "seal"])
def test_qsign_pades_valid(softhsm_state: Path, tmp_path: Path, profile: str) -> None:
    signed = tmp_path / f"{profile}.pdf"
    signing = run_qsign("sign", str(real_pdf("xiaoshan-sample.pdf")), "-o", str(signed), "--profile", profile,
                        state_dir=softhsm_state)
    assert signing.returncode == 0, signing.stderr

    verifying = run_qsign("verify", str(signed), "--json", state_dir=softhsm_state)

    assert verifying.returncode == 0, verifying.stdout + verifying.stderr
    report = json.loads(verifying.stdout)
    assert report["verdict"] == "TOTAL_PASSED"
    assert report["trust"]["source"] == "config"
    assert report["signatures"][0]["trusted"] is True


def test_qsign_cades_detached_valid(softhsm_state: Path, tmp_path: Path) -> None:
    content = tmp_path / "notice.txt"
    content.write_text("国家税务总局测试通知\n", encoding="utf-8")
    signature = tmp_path / "notice.txt.p7s"
    signing = run_qsign("sign", str(content), "-o", str(signature), "--profile", "officer",
                        state_dir=softhsm_state)
    assert signing.returncode == 0, signing.stderr

    verifying = run_qsign("verify", str(signature), "--content", str(content), "--json", state_dir=softhsm_state)

    assert verifying.returncode == 0, verifying.stdout + verifying.stderr
    assert json.loads(verifying.stdout)["verdict"] == "TOTAL_PASSED"
