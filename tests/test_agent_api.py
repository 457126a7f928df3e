"""The agent over real HTTP on 127.0.0.1 with the SoftHSM2 officer token: flow, denials, races, hostile input.

One agent process serves the whole module, on a copy of the session's state dir whose officer token has
a PIN of its own (``PIN``), so that the final test can search every file the agent wrote for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

from archive.api import Archive
from conftest import run_qsign
from helpers.agent_rig import AgentProcess, Phone, copy_state, set_agent_config
from helpers.softhsm_rig import SOFTHSM_MODULE

DEMO_PDF = Path(__file__).parent / "data" / "real" / "xiaoshan-sample.pdf"
PIN = "73915584"
OLD_PIN = "123456"

EXTRA_POLICY = """
[users.officer-zhou]
name = "周强"
roles = ["officer"]
token_profile = "officer"

[users.officer-ec]
name = "EC officer"
roles = ["officer"]
token_profile = "officer_ec"

[users.officer-expired]
name = "Expired officer"
roles = ["officer"]
token_profile = "officer"
sign_from = 2020-01-01T00:00:00Z
sign_until = 2021-01-01T00:00:00Z

[users.officer-reviewer]
name = "Officer and reviewer"
roles = ["officer", "reviewer"]
token_profile = "officer"

[users.operator-qian]
name = "钱丽"
roles = ["operator"]

[templates.tiny]
name_zh = "小文件"
name_en = "Tiny"
required_approvals = 1
max_bytes = 50000
max_pages = 1

[templates.two-approvals]
name_zh = "双人审核"
name_en = "Two approvals"
reviewer_roles = ["reviewer"]
required_approvals = 2
"""


def _change_pin(state_dir: Path) -> None:
    environment = dict(os.environ, SOFTHSM2_CONF=str(state_dir / "softhsm" / "softhsm2.conf"))
    completed = subprocess.run(
        ["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", "qsign-officer", "--login", "--pin", OLD_PIN,
         "--change-pin", "--new-pin", PIN], env=environment, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr


@pytest.fixture(scope="module")
def agent(softhsm_state, tmp_path_factory):
    state_dir = copy_state(softhsm_state, tmp_path_factory.mktemp("agent-api") / "state")
    _change_pin(state_dir)
    policy = state_dir / "policy.toml"
    text = policy.read_text(encoding="utf-8").replace('ec_curves = ["secp256r1", "secp384r1"]',
                                                       'ec_curves = ["secp384r1"]')
    policy.write_text(text + EXTRA_POLICY, encoding="utf-8")
    set_agent_config(state_dir, advertise=True, name=f"agent-api-test-{os.getpid()}", max_upload_bytes=2_000_000,
                     sign_attempts_per_minute=12, token_wait_seconds=5)
    process = AgentProcess(state_dir)
    process.start()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def phones(agent):
    async def pair_all():
        result = {}
        for user in ("operator-zhao", "operator-qian", "reviewer-wang", "officer-li", "officer-zhou", "officer-ec",
                     "officer-expired", "officer-reviewer", "auditor-chen"):
            phone = Phone(agent.base_url)
            await phone.pair(agent.pair_code(user), name=f"phone of {user}")
            result[user] = phone
        second = Phone(agent.base_url)
        await second.pair(agent.pair_code("officer-li"), name="second phone of officer-li")
        result["officer-li-2"] = second
        return result

    return asyncio.run(pair_all())


async def _approved_request(phones, signer="officer-li", template="officer-signature", content=None,
                            name="doc.pdf", content_type="application/pdf"):
    status, body = await phones["operator-zhao"].upload(content or DEMO_PDF.read_bytes(), template=template,
                                                         signer=signer, name=name, content_type=content_type)
    assert status == 201, body
    status, approved, _ = await phones["reviewer-wang"].call("POST", f"/api/v1/requests/{body['id']}/approve")
    assert status == 200, approved
    return approved


def _schema(document, name):
    return {"$ref": f"#/components/schemas/{name}", "components": document["components"]}


async def test_whole_flow_signs_and_verifies(agent, phones):
    operator, reviewer, officer = phones["operator-zhao"], phones["reviewer-wang"], phones["officer-li"]
    status, created = await operator.upload(DEMO_PDF.read_bytes(), name="notice.pdf")
    assert status == 201
    assert created["state"] == "waiting_for_review"
    assert created["sha256"] == hashlib.sha256(DEMO_PDF.read_bytes()).hexdigest()
    request_id = created["id"]

    status, listed, _ = await reviewer.call("GET", "/api/v1/requests?view=to_review")
    assert request_id in [item["id"] for item in listed["requests"]]
    status, page, response = await officer.call("GET", f"/api/v1/requests/{request_id}/pages/1")
    assert status == 200
    assert response.headers["X-Content-SHA256"] == created["sha256"]
    assert Image.open(io.BytesIO(page)).format == "PNG"

    status, approved, _ = await reviewer.call("POST", f"/api/v1/requests/{request_id}/approve",
                                              json_body={"comment": "ok"})
    assert approved["state"] == "approved"
    status, to_sign, _ = await officer.call("GET", "/api/v1/requests?view=to_sign")
    assert request_id in [item["id"] for item in to_sign["requests"]]

    events = asyncio.create_task(officer.events(request_id, {"signed", "failed"}))
    await asyncio.sleep(0.2)
    status, signed, _ = await officer.call("POST", f"/api/v1/requests/{request_id}/sign",
                                           json_body={"pin": PIN, "sha256": created["sha256"]})
    assert status == 200, signed
    assert signed["state"] == "signed"
    states = [event["state"] for event in await events]
    assert states[-3:] == ["token_present", "signing", "signed"]
    assert "approved" in states

    status, data, response = await officer.call("GET", f"/api/v1/requests/{request_id}/signed")
    assert status == 200
    assert hashlib.sha256(data).hexdigest() == signed["signed_sha256"]
    output = agent.state_dir / "flow-signed.pdf"
    output.write_bytes(data)
    status = await _validate_offline(agent.state_dir, output)
    assert status.intact is True
    assert status.valid is True
    assert status.trusted is True
    assert status.signer_reported_dt is not None


async def _validate_offline(state_dir: Path, signed: Path):
    """Validate the first signature with pyHanko against the test anchors, revocation checking off.

    The test certificates name OCSP and CRL URLs on 127.0.0.1:8471, a fixed port that other suites may
    hold; ``qsign demo`` and its test check the signature with revocation through that server.
    """
    from asn1crypto import pem, x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import async_validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    def certificate(name):
        return x509.Certificate.load(pem.unarmor((state_dir / "pki" / name).read_bytes())[2])

    context = ValidationContext(trust_roots=[certificate("root-ca.pem")], other_certs=[certificate("intermediate-ca.pem")],
                                allow_fetching=False, revocation_mode="soft-fail")
    with signed.open("rb") as handle:
        return await async_validate_pdf_signature(PdfFileReader(handle).embedded_signatures[0], context)


async def test_attachment_signed_with_detached_cades(agent, phones):
    content = "纳税申报附件\n".encode("utf-8") * 100
    request = await _approved_request(phones, template="officer-attachment", content=content, name="attachment.txt",
                                      content_type="text/plain")
    assert request["media_type"] == "text/plain"

    status, signed, _ = await phones["officer-li"].call("POST", f"/api/v1/requests/{request['id']}/sign",
                                                        json_body={"pin": PIN, "sha256": request["sha256"]})
    assert status == 200, signed
    status, data, response = await phones["officer-li"].call("GET", f"/api/v1/requests/{request['id']}/signed")
    assert response.content_type == "application/pkcs7-signature"
    signature, original = agent.state_dir / "attachment.p7s", agent.state_dir / "attachment.txt"
    signature.write_bytes(data)
    original.write_bytes(content)
    completed = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signature), "-content", str(original),
         "-CAfile", str(agent.state_dir / "pki" / "root-ca.pem"), "-purpose", "any", "-out", "/dev/null"],
        capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr


async def test_unknown_template_is_denied(phones):
    status, body = await phones["operator-zhao"].upload(DEMO_PDF.read_bytes(), template="no-such-template")

    assert status == 403
    assert body["code"] == "policy_denied"
    assert body["rule"] == "template.known"


@pytest.mark.parametrize(("uploader", "template", "signer", "content", "name", "rule"), [
    ("reviewer-wang", "officer-signature", "officer-li", None, "doc.pdf", "template.requester_role"),
    ("operator-zhao", "officer-signature", "reviewer-wang", None, "doc.pdf", "signer.role"),
    ("operator-zhao", "officer-signature", "nobody", None, "doc.pdf", "signer.known"),
    ("operator-zhao", "officer-signature", "officer-li", b"plain text", "notes.txt", "template.document_type"),
    ("operator-zhao", "tiny", "officer-li", None, "doc.pdf", "template.max_bytes"),
])
async def test_create_denials(phones, uploader, template, signer, content, name, rule):
    content_type = "text/plain" if name.endswith(".txt") else "application/pdf"
    status, body = await phones[uploader].upload(content or DEMO_PDF.read_bytes(), template=template, signer=signer,
                                                 name=name, content_type=content_type)

    assert status == 403, body
    assert body["code"] == "policy_denied"
    assert body["rule"] == rule
    assert set(body) >= {"code", "message", "request_id"}


async def test_max_pages_denial(phones):
    two_pages = _pdf_with_pages(2)
    status, body = await phones["operator-zhao"].upload(two_pages, template="tiny")

    assert status == 403
    assert body["rule"] == "template.max_pages"


def _pdf_with_pages(count: int) -> bytes:
    import pypdfium2

    document = pypdfium2.PdfDocument.new()
    for _ in range(count):
        document.new_page(595, 842)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


async def test_review_denials(phones):
    status, created = await phones["operator-zhao"].upload(DEMO_PDF.read_bytes(), signer="officer-reviewer")
    path = f"/api/v1/requests/{created['id']}/approve"

    status, body, _ = await phones["operator-qian"].call("POST", path)
    assert (status, body["rule"]) == (403, "reviewer.role")
    status, body, _ = await phones["officer-reviewer"].call("POST", path)
    assert (status, body["rule"]) == (403, "reviewer.not_signer")

    status, two, = await phones["operator-zhao"].upload(DEMO_PDF.read_bytes(), template="two-approvals")
    status, first, _ = await phones["reviewer-wang"].call("POST", f"/api/v1/requests/{two['id']}/approve")
    assert first["state"] == "waiting_for_review"
    status, body, _ = await phones["reviewer-wang"].call("POST", f"/api/v1/requests/{two['id']}/approve")
    assert (status, body["rule"]) == (403, "reviewer.once")


async def test_sign_denials(phones):
    pending_status, pending = await phones["operator-zhao"].upload(DEMO_PDF.read_bytes())
    body = {"pin": PIN, "sha256": pending["sha256"]}
    status, denied, _ = await phones["officer-li"].call("POST", f"/api/v1/requests/{pending['id']}/sign", json_body=body)
    assert (status, denied["rule"]) == (403, "template.approvals")
    status, denied, _ = await phones["officer-zhou"].call("POST", f"/api/v1/requests/{pending['id']}/sign",
                                                          json_body=body)
    assert (status, denied["rule"]) == (403, "signer.assigned")

    expired = await _approved_request(phones, signer="officer-expired")
    status, denied, _ = await phones["officer-expired"].call(
        "POST", f"/api/v1/requests/{expired['id']}/sign", json_body={"pin": PIN, "sha256": expired["sha256"]})
    assert (status, denied["rule"]) == (403, "signer.authorisation_window")


async def test_algorithm_policy_denies_p256(phones):
    request = await _approved_request(phones, signer="officer-ec")
    status, denied, _ = await phones["officer-ec"].call(
        "POST", f"/api/v1/requests/{request['id']}/sign", json_body={"pin": PIN, "sha256": request["sha256"]})

    assert status == 403
    assert denied["rule"] == "algorithm.ec_curve"
    status, after, _ = await phones["officer-ec"].call("GET", f"/api/v1/requests/{request['id']}")
    assert after["state"] == "failed"
    assert after["signed_sha256"] is None


async def test_view_and_cancel_denials(phones):
    status, created = await phones["operator-zhao"].upload(DEMO_PDF.read_bytes())
    path = f"/api/v1/requests/{created['id']}"

    status, body, _ = await phones["operator-qian"].call("GET", path)
    assert (status, body["rule"]) == (403, "request.view")
    status, body, _ = await phones["operator-qian"].call("POST", path + "/cancel")
    assert (status, body["rule"]) == (403, "request.cancel")
    status, body, _ = await phones["auditor-chen"].call("GET", path)
    assert status == 200

    status, cancelled, _ = await phones["operator-zhao"].call("POST", path + "/cancel")
    assert cancelled["state"] == "cancelled"
    status, body, _ = await phones["reviewer-wang"].call("POST", path + "/approve")
    assert (status, body["code"]) == (409, "request_state_conflict")


async def test_denials_reach_audit_log(agent, phones):
    await phones["reviewer-wang"].upload(DEMO_PDF.read_bytes())

    with Archive.open(agent.state_dir) as archive:
        denied = [entry for entry in archive.audit_entries() if entry.outcome == "denied"]
    assert any(entry.reason == "template.requester_role" for entry in denied)


async def test_denial_message_is_localized(phones):
    chinese = Phone(phones["reviewer-wang"].base_url, token=phones["reviewer-wang"].token, language="zh-CN")
    status, zh = await chinese.upload(DEMO_PDF.read_bytes())
    status, en = await phones["reviewer-wang"].upload(DEMO_PDF.read_bytes())

    assert zh["code"] == en["code"] == "policy_denied"
    assert zh["message"] != en["message"]
    assert any("\u4e00" <= character <= "\u9fff" for character in zh["message"])


async def test_two_devices_race_one_signature(agent, phones):
    request = await _approved_request(phones)
    body = {"pin": PIN, "sha256": request["sha256"]}
    path = f"/api/v1/requests/{request['id']}/sign"

    results = await asyncio.gather(phones["officer-li"].call("POST", path, json_body=body),
                                   phones["officer-li-2"].call("POST", path, json_body=body))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 409]
    loser = next(payload for status, payload, _ in results if status == 409)
    assert loser["code"] == "request_state_conflict"
    with Archive.open(agent.state_dir) as archive:
        signed = [e for e in archive.audit_entries() if e.action == "request.signed"
                  and json.loads(e.object_ids if isinstance(e.object_ids, str) else json.dumps(e.object_ids))
                  .get("request_id") == request["id"]]
    assert len(signed) == 1


async def test_wrong_pin_then_right_pin(phones):
    request = await _approved_request(phones)
    path = f"/api/v1/requests/{request['id']}/sign"

    status, wrong, _ = await phones["officer-li"].call("POST", path, json_body={"pin": "00000000",
                                                                               "sha256": request["sha256"]})
    assert status == 401
    assert wrong["code"] == "pin_incorrect"
    assert "00000000" not in json.dumps(wrong)
    status, failed, _ = await phones["officer-li"].call("GET", f"/api/v1/requests/{request['id']}")
    assert (failed["state"], failed["error_code"]) == ("failed", "pin_incorrect")

    status, signed, _ = await phones["officer-li"].call("POST", path, json_body={"pin": PIN, "sha256": request["sha256"]})
    assert status == 200
    assert signed["state"] == "signed"


async def test_digest_mismatch_signs_nothing(phones):
    request = await _approved_request(phones)
    wrong = hashlib.sha256(b"another document").hexdigest()
    status, body, _ = await phones["officer-li"].call("POST", f"/api/v1/requests/{request['id']}/sign",
                                                      json_body={"pin": PIN, "sha256": wrong})

    assert status == 409
    assert body["code"] == "digest_mismatch"
    status, after, _ = await phones["officer-li"].call("GET", f"/api/v1/requests/{request['id']}")
    assert after["state"] == "approved"
    assert after["signed_sha256"] is None


async def test_sign_rate_limit_per_user(phones):
    """officer-zhou made one sign attempt in test_sign_denials; the limit is 12 a minute."""
    request = await _approved_request(phones, signer="officer-zhou")
    body = {"pin": PIN, "sha256": "0" * 64}
    statuses = []
    for _ in range(13):
        status, payload, _ = await phones["officer-zhou"].call("POST", f"/api/v1/requests/{request['id']}/sign",
                                                               json_body=body)
        statuses.append((status, payload["code"]))

    assert (429, "rate_limited") in statuses
    first_limited = statuses.index((429, "rate_limited"))
    assert 11 <= first_limited <= 12
    assert set(statuses[:first_limited]) == {(409, "digest_mismatch")}


async def test_pairing_replayed_code_is_refused(agent):
    code = agent.pair_code("operator-zhao")
    phone = Phone(agent.base_url)
    await phone.pair(code)
    status, body, _ = await Phone(agent.base_url).call("POST", "/api/v1/pairing",
                                                      json_body={"code": code, "device_name": "replay"})

    assert status == 401
    assert body["code"] == "pairing_code_used"


async def test_pairing_expired_code_is_refused(agent):
    code = agent.pair_code("operator-zhao")
    with Archive.open(agent.state_dir) as archive, archive.transaction() as tx:
        pending = [d for d in tx.list_devices() if not d.token_hash and not d.attributes["pairing"]["used_at"]]
        for device in pending:
            past = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
            tx.update_device(device.id, attributes={"pairing": {**device.attributes["pairing"], "expires_at": past}})
    status, body, _ = await Phone(agent.base_url).call("POST", "/api/v1/pairing",
                                                      json_body={"code": code, "device_name": "late"})

    assert status == 401
    assert body["code"] == "pairing_code_expired"


async def test_pairing_wrong_code_is_refused(agent):
    status, body, _ = await Phone(agent.base_url).call("POST", "/api/v1/pairing",
                                                      json_body={"code": "AAAA-BBBB-CCCC", "device_name": "guess"})
    assert status == 401
    assert body["code"] == "pairing_code_invalid"


async def test_revoked_device_is_refused(agent):
    phone = Phone(agent.base_url)
    await phone.pair(agent.pair_code("operator-zhao"))
    status, _, _ = await phone.call("GET", "/api/v1/me")
    assert status == 200

    completed = run_qsign("agent", "devices", "--revoke", phone.device_id, "--json", state_dir=agent.state_dir)
    assert completed.returncode == 0, completed.stderr
    status, body, _ = await phone.call("GET", "/api/v1/me")
    assert status == 401
    assert body["code"] == "device_revoked"
    with Archive.open(agent.state_dir) as archive:
        failures = archive.audit_entries(action="device.auth_failed")
    assert any(entry.device == phone.device_id and entry.reason == "device_revoked" for entry in failures)
    listed = run_qsign("agent", "devices", "--all", "--json", state_dir=agent.state_dir)
    rows = {row["device_id"]: row for row in json.loads(listed.stdout)["devices"]}
    assert rows[phone.device_id]["status"] == "revoked"


def test_pair_cli_prints_code_and_expiry(agent):
    completed = run_qsign("agent", "pair", "--user", "officer-li", "--json", state_dir=agent.state_dir)

    assert completed.returncode == 0, completed.stderr
    printed = json.loads(completed.stdout)
    expires = datetime.fromisoformat(printed["expires_at"])
    assert timedelta(minutes=9) < expires - datetime.now(timezone.utc) <= timedelta(minutes=10)
    assert len(printed["code"].replace("-", "")) == 12


def test_pair_cli_rejects_unknown_user(agent):
    completed = run_qsign("agent", "pair", "--user", "nobody", "--json", state_dir=agent.state_dir)
    assert completed.returncode == 2


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "x" * 1000)
    return buffer.getvalue()


@pytest.mark.parametrize(("content", "name", "status", "code"), [
    (b"%PDF-1.7\n" + os.urandom(3_000_000), "big.pdf", 413, "request_too_large"),
    (b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ntrailer\n%%EOF\n", "broken.pdf", 422, "pdf_malformed"),
    (_zip_bytes(), "invoice.pdf", 415, "document_type_mismatch"),
    (b"GIF89a" + b"\0" * 100, "image.gif", 403, "policy_denied"),
])
async def test_hostile_uploads_are_rejected(agent, phones, content, name, status, code):
    with Archive.open(agent.state_dir) as archive, archive.transaction() as tx:
        before = len(tx.list_requests())
    content_type = "application/pdf" if name.endswith(".pdf") else "image/gif"
    got_status, body = await phones["operator-zhao"].upload(content, name=name, content_type=content_type)

    assert got_status == status, body
    assert body["code"] == code
    assert body["request_id"]
    with Archive.open(agent.state_dir) as archive, archive.transaction() as tx:
        assert len(tx.list_requests()) == before


async def test_host_header_not_on_list(phones):
    status, body, _ = await phones["operator-zhao"].call("GET", "/api/v1/me", headers={"Host": "evil.example:80"})

    assert status == 421
    assert body["code"] == "host_not_allowed"


async def test_no_cors_headers(phones):
    status, _, response = await phones["operator-zhao"].call("GET", "/api/v1/me",
                                                             headers={"Origin": "https://evil.example"})
    assert status == 200
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_unauthenticated_call_is_refused(agent):
    status, body, _ = await Phone(agent.base_url).call("GET", "/api/v1/requests")

    assert status == 401
    assert body["code"] == "unauthorized"


async def test_unknown_json_field_is_refused(phones):
    status, created = await phones["operator-zhao"].upload(DEMO_PDF.read_bytes())
    status, body, _ = await phones["officer-li"].call("POST", f"/api/v1/requests/{created['id']}/sign",
                                                      json_body={"pin": PIN, "sha256": created["sha256"], "x": 1})
    assert status == 400
    assert body["code"] == "invalid_request_body"


def test_discover_finds_agent(agent):
    completed = run_qsign("agent", "discover", "--interface", "127.0.0.1", "--timeout", "4", "--json")

    assert completed.returncode == 0, completed.stderr
    urls = [found["base_url"] for found in json.loads(completed.stdout)["agents"]]
    assert agent.base_url in urls, completed.stdout + completed.stderr[-2000:]


async def test_openapi_covers_every_route(agent):
    from agent.server import API_ROUTES

    status, document, _ = await Phone(agent.base_url).call("GET", "/api/v1/openapi.json")
    assert status == 200
    routes = {(method.lower(), path) for method, path, _ in API_ROUTES}
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert routes == documented


async def test_documented_routes_exist_on_server(agent, phones):
    status, document, _ = await Phone(agent.base_url).call("GET", "/api/v1/openapi.json")
    for path, item in document["paths"].items():
        for method in item:
            concrete = path.replace("{request_id}", "req-none").replace("{page}", "1").replace("{job_id}", "job-none")
            status, body, _ = await phones["auditor-chen"].call(method.upper(), concrete)
            assert status != 405, (method, path)
            if status == 404:
                assert body["code"] == "request_not_found", (method, path)


async def test_responses_match_openapi_schemas(agent, phones):
    status, document, _ = await Phone(agent.base_url).call("GET", "/api/v1/openapi.json")
    request = await _approved_request(phones)
    checks = [
        (Phone(agent.base_url), "GET", "/api/v1", None, "Info"),
        (Phone(agent.base_url), "GET", "/healthz", None, "Health"),
        (phones["officer-li"], "GET", "/api/v1/me", None, "Me"),
        (phones["officer-li"], "GET", f"/api/v1/requests/{request['id']}", None, "Request"),
        (phones["officer-li"], "GET", "/api/v1/requests?view=to_sign", None, "RequestList"),
        (phones["officer-li"], "GET", "/api/v1/requests/req-none", None, "Error"),
        (phones["officer-li"], "POST", f"/api/v1/requests/{request['id']}/sign",
         {"pin": PIN, "sha256": request["sha256"]}, "Request"),
    ]
    for phone, method, path, body, schema in checks:
        status, payload, _ = await phone.call(method, path, json_body=body)
        jsonschema.validate(payload, _schema(document, schema))


def test_pin_not_in_logs_or_database(agent, phones):
    """Runs last in this module: every signature above sent PIN."""
    found = []
    for path in agent.state_dir.rglob("*"):
        if path.is_file() and "secrets" not in path.parts and "tokens" not in path.parts:
            if PIN.encode() in path.read_bytes():
                found.append(path)
    assert agent.log_path.stat().st_size > 0
    assert found == []
