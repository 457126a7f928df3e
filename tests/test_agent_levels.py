"""Agent templates at B-T, B-LT and B-LTA, and the policy's revocation check before B-B signatures.

The module's state dir has its test PKI served by certomancer's animator (the ``pki_services``
fixture), and one agent process signs on it. The policy turns on ``[certificates] check_revocation``,
so the agent checks the officer's certificate before every signature, B-B included, and
``[ltv] cache_seconds = 0``, so that every check fetches (a revocation shows at once).
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
from pathlib import Path

import pytest
import tomli_w
import tomllib
from asn1crypto import cms
from cryptography import x509
from pyhanko.pdf_utils.reader import PdfFileReader

from conftest import run_qsign
from helpers.agent_rig import AgentProcess, Phone, set_agent_config
from softhsm_setup.layout import StateLayout
from softhsm_setup.ltv_pki import revoke_certificate
from softhsm_setup.specs import TEST_USER_PIN

DEMO_PDF = Path(__file__).parent / "data" / "real" / "xiaoshan-sample.pdf"

_TEMPLATE = """
[templates.{id}]
name_zh = "{id}"
name_en = "{id}"
requester_roles = ["officer"]
signer_roles = ["officer"]
required_approvals = 0
document_types = [{types}]
signature_format = "{format}"
signature_level = "{level}"
"""

EXTRA_USERS = """
[users.officer-ec]
name = "李娜"
roles = ["officer"]
token_profile = "officer_ec"
"""


@pytest.fixture(scope="module")
def agent(pki_services):
    state_dir = pki_services.state_dir
    policy = state_dir / "policy.toml"
    text = policy.read_text(encoding="utf-8").replace("required_policy_oids = []",
                                                       "required_policy_oids = []\ncheck_revocation = true")
    templates = [
        _TEMPLATE.format(id=f"pades-{level.lower()}", types='"application/pdf"', format="pades", level=level)
        for level in ("B-B", "B-T", "B-LT", "B-LTA")
    ]
    templates.append(_TEMPLATE.format(id="cades-b-t", types='"text/plain"', format="cades", level="B-T"))
    policy.write_text(text + EXTRA_USERS + "".join(templates), encoding="utf-8")
    set_agent_config(state_dir, token_wait_seconds=5)
    config_path = state_dir / "qsign.toml"
    raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    raw["ltv"]["cache_seconds"] = 0
    config_path.write_text(tomli_w.dumps(raw), encoding="utf-8")

    process = AgentProcess(state_dir)
    process.start()
    yield process
    assert process.stop() == 0


async def _paired(agent: AgentProcess, user: str) -> Phone:
    phone = Phone(agent.base_url)
    await phone.pair(agent.pair_code(user), name=f"phone of {user}")
    return phone


async def _request_and_sign(phone: Phone, user: str, template: str, content: bytes, name: str,
                            content_type: str) -> tuple[int, dict, dict]:
    status, created = await phone.upload(content, template=template, signer=user, name=name,
                                         content_type=content_type)
    assert status == 201, created
    status, signed, _ = await phone.call("POST", f"/api/v1/requests/{created['id']}/sign",
                                         json_body={"pin": TEST_USER_PIN, "sha256": created["sha256"]})
    return status, signed, created


def _sign_as(agent: AgentProcess, user: str, template: str, content: bytes, name: str = "notice.pdf",
             content_type: str = "application/pdf") -> tuple[int, dict, bytes | None]:
    async def run() -> tuple[int, dict, bytes | None]:
        phone = await _paired(agent, user)
        status, signed, created = await _request_and_sign(phone, user, template, content, name, content_type)
        if status != 200:
            return status, signed, None
        status, data, _ = await phone.call("GET", f"/api/v1/requests/{created['id']}/signed")
        assert status == 200
        return 200, signed, data

    return asyncio.run(run())


def _verify(state_dir: Path, path: Path) -> dict:
    completed = run_qsign("verify", str(path), "--json", state_dir=state_dir)
    assert completed.returncode in (0, 1), completed.stdout + completed.stderr
    return json.loads(completed.stdout)


@pytest.mark.parametrize("level", ["B-T", "B-LT", "B-LTA"])
def test_pades_template_level(agent: AgentProcess, pki_services, level: str, tmp_path: Path) -> None:
    status, signed, data = _sign_as(agent, "officer-li", f"pades-{level.lower()}", DEMO_PDF.read_bytes())
    assert status == 200, signed
    output = tmp_path / f"{level}.pdf"
    output.write_bytes(data)

    reader = PdfFileReader(io.BytesIO(data))
    assert len(reader.embedded_timestamp_signatures) == (1 if level == "B-LTA" else 0)

    # B-LT and B-LTA verify from the embedded data with the responders down; B-T needs them.
    if level != "B-T":
        pki_services.stop()
    try:
        report = _verify(agent.state_dir, output)
    finally:
        pki_services.start()
    signature = report["signatures"][0]
    assert signature["level"] == level
    if level == "B-T":
        assert signature["timestamp"]["time"] is not None
    else:
        assert (report["verdict"], report["sub_indication"]) == ("TOTAL_PASSED", None)
        assert signature["revocation"]["source"] == "embedded"


def test_cades_template_b_t(agent: AgentProcess, tmp_path: Path) -> None:
    status, signed, data = _sign_as(agent, "officer-li", "cades-b-t", "纳税申报附件\n".encode(), name="note.txt",
                                    content_type="text/plain")
    assert status == 200, signed
    signer_info = cms.ContentInfo.load(data)["content"]["signer_infos"][0]
    unsigned = signer_info["unsigned_attrs"]
    assert [attribute["type"].native for attribute in unsigned] == ["signature_time_stamp_token"]


def test_revoked_officer_refused_at_b_b(agent: AgentProcess, pki_services) -> None:
    layout = StateLayout(agent.state_dir)
    certificate = x509.load_pem_x509_certificate(layout.end_entity_certificate("officer-ec").read_bytes())
    revoked_at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) - datetime.timedelta(minutes=1)
    revoke_certificate(layout, certificate, revoked_at=revoked_at, reason="key_compromise")

    status, body, data = _sign_as(agent, "officer-ec", "pades-b-b", DEMO_PDF.read_bytes())
    assert status == 403, body
    assert body["code"] == "signer_revoked"
    assert body["ids"]["revoked_at"] == revoked_at.isoformat()
    assert data is None


def test_responder_down_fails_b_b(agent: AgentProcess, pki_services) -> None:
    pki_services.stop()
    try:
        status, body, data = _sign_as(agent, "officer-li", "pades-b-b", DEMO_PDF.read_bytes())
    finally:
        pki_services.start()
    assert status == 503, body
    assert body["code"] == "revocation_unavailable"
    assert data is None
