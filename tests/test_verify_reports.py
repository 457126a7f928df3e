"""Filed reports: the JSON schema, auditor login and API tokens, the audit log and the archive lookup."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import aiohttp
import jsonschema
import pytest
import verify_attacks as attacks
from verify_pki import (  # noqa: F401  (fixtures)
    TestPki,
    add_document_timestamp,
    real_pdf,
    sign_cms,
    sign_pdf_bytes,
    signed_pdf,
    test_pki,
    verify_state,
    write_state_dir,
)

from archive.api import Archive, DocumentKind
from qsign.cli import main
from qsign.config import load_config
from verify_service.server import start_server
from verify_service.settings import service_settings
from verify_service.trust import trust_from_config, trust_from_files
from verify_service.validate import verify_file

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "verify_service" / "schema" / "report.schema.json"
PASSWORD = "auditor-password-1"


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def _reports(pki: TestPki, directory: Path) -> dict[str, Path]:
    source = real_pdf("xiaoshan-sample.pdf").read_bytes()
    signed = sign_pdf_bytes(source, pki.signer, timestamper=pki.timestamper)
    files = {
        "timestamped.pdf": add_document_timestamp(signed, pki.timestamper),
        "attacked.pdf": attacks.isa_page_content(signed),
        "usf.pdf": attacks.usf_contents_zeroed(signed),
        "unsigned.pdf": source,
        "notice.p7m": sign_cms(b"notice", pki.signer, detached=False),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = directory / name
        paths[name].write_bytes(data)
    return paths


def test_reports_match_schema(validator, test_pki: TestPki, tmp_path: Path) -> None:
    trust = trust_from_files([test_pki.root_pem], [test_pki.intermediate_pem])
    verdicts = {}
    for name, path in _reports(test_pki, tmp_path).items():
        report = verify_file(path, trust=trust).to_dict()
        validator.validate(report)
        verdicts[name] = report["verdict"]

    assert verdicts == {"timestamped.pdf": "TOTAL_PASSED", "attacked.pdf": "TOTAL_FAILED", "usf.pdf": "TOTAL_FAILED",
                        "unsigned.pdf": "INDETERMINATE", "notice.p7m": "TOTAL_PASSED"}


def test_schema_rejects_unknown_verdict(validator, signed_pdf: Path, test_pki: TestPki) -> None:
    report = verify_file(signed_pdf, trust=trust_from_files([test_pki.root_pem])).to_dict()
    report["verdict"] = "valid"

    with pytest.raises(jsonschema.ValidationError):
        validator.validate(report)


def test_pades_levels(test_pki: TestPki, tmp_path: Path) -> None:
    source = real_pdf("xiaoshan-sample.pdf").read_bytes()
    trust = trust_from_files([test_pki.root_pem], [test_pki.intermediate_pem])
    plain = tmp_path / "plain.pdf"
    plain.write_bytes(sign_pdf_bytes(source, test_pki.signer))
    stamped = tmp_path / "stamped.pdf"
    stamped.write_bytes(sign_pdf_bytes(source, test_pki.signer, timestamper=test_pki.timestamper))

    assert verify_file(plain, trust=trust).signatures[0].level == "B-B"
    assert verify_file(stamped, trust=trust).signatures[0].level == "B-T"


# The service with auditor accounts


@pytest.fixture
def auditor_state(test_pki: TestPki, tmp_path: Path, capsys) -> tuple[Path, str]:
    """A state dir with the auditor ``li.shen`` and an API token for it."""
    state = write_state_dir(tmp_path / "state", test_pki)
    sys.stdin = io.StringIO(PASSWORD + "\n")
    try:
        assert main(["verify", "users", "add", "li.shen", "--password-stdin", "--state-dir", str(state)]) == 0
    finally:
        sys.stdin = sys.__stdin__
    assert main(["verify", "tokens", "create", "li.shen", "--label", "scripts", "--state-dir", str(state)]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    return state, token


async def _start(state: Path):
    config = load_config(state)
    return await start_server(service_settings(config, trust_from_config(config)), "127.0.0.1", 0)


def test_users_list(auditor_state: tuple[Path, str], capsys) -> None:
    state, _ = auditor_state

    assert main(["verify", "users", "list", "--json", "--state-dir", str(state)]) == 0
    accounts = json.loads(capsys.readouterr().out)
    assert [(account["name"], account["role"], account["tokens"]) for account in accounts] == [
        ("li.shen", "auditor", 1)]
    stored = (state / "verify_service" / "accounts.json").read_text(encoding="utf-8")
    assert PASSWORD not in stored and "$argon2id$" in stored


async def test_token_required_and_report_filed(auditor_state: tuple[Path, str], signed_pdf: Path, validator) -> None:
    state, token = auditor_state
    runner, url = await _start(state)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/api/v1/verify", data=signed_pdf.read_bytes(),
                                    headers={"Content-Type": "application/pdf", "Accept-Language": "en"}) as anonymous:
                refused = await anonymous.json()
            async with session.post(f"{url}/api/v1/verify", data=signed_pdf.read_bytes(),
                                    headers={"Content-Type": "application/pdf",
                                             "Authorization": "Bearer qv_0000000000000000_" + "x" * 30}) as forged:
                assert forged.status == 401
            headers = {"Authorization": f"Bearer {token}"}
            async with session.post(f"{url}/api/v1/verify?name=通知.pdf", data=signed_pdf.read_bytes(),
                                    headers={**headers, "Content-Type": "application/pdf"}) as response:
                report = await response.json()
            async with session.get(f"{url}/api/v1/reports/{report['id']}", headers=headers) as again:
                filed = await again.json()
            async with session.get(f"{url}/api/v1/reports/{report['id']}/report.html?lang=en",
                                   headers=headers) as html_en:
                page_en = await html_en.text()
            async with session.get(f"{url}/api/v1/reports/{report['id']}/report.html?lang=zh_CN",
                                   headers=headers) as html_zh:
                page_zh = await html_zh.text()
            async with session.get(f"{url}/api/v1/reports/{'0' * 32}", headers=headers) as missing:
                assert (missing.status, (await missing.json())["code"]) == (404, "report_not_found")
    finally:
        await runner.cleanup()

    assert (anonymous.status, refused["code"]) == (401, "login_required")
    assert response.status == 200
    assert response.headers["Location"] == f"/api/v1/reports/{report['id']}"
    assert report["requested_by"] == "li.shen"
    assert filed == report
    validator.validate(filed)
    assert "script-src" not in html_en.headers["Content-Security-Policy"]
    assert "default-src 'none'" in html_en.headers["Content-Security-Policy"]
    assert "<script" not in page_en
    assert "Verification report" in page_en and "TOTAL_PASSED" in page_en and report["file"]["sha256"] in page_en
    assert "验证报告" in page_zh and "通知.pdf" in page_zh and "签名人" in page_zh

    with Archive.open(state, with_key=False) as archive:
        entries = archive.audit_entries()
    verified = [entry for entry in entries if entry.action == "verify.report"]
    assert [(entry.actor, entry.object_ids["report_id"], entry.object_ids["verdict"]) for entry in verified] == [
        ("li.shen", report["id"], "TOTAL_PASSED")]
    assert verified[0].document_hashes == [report["file"]["sha256"]]


async def test_archive_knows_signed_file(auditor_state: tuple[Path, str], signed_pdf: Path) -> None:
    """A file the archive holds as a signed result: the report says qsign signed it and links the request."""
    state, token = auditor_state
    with Archive.open(state, with_key=False) as archive:
        original = archive.store_document(real_pdf("xiaoshan-sample.pdf"), DocumentKind.ORIGINAL)
        signed = archive.store_document(signed_pdf, DocumentKind.SIGNED)
        with archive.transaction() as tx:
            tx.create_request("req-2026-0001", state="signed", original_sha256=original.sha256)
            tx.update_request("req-2026-0001", signed_sha256=signed.sha256)

    runner, url = await _start(state)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/api/v1/verify", data=signed_pdf.read_bytes(),
                                    headers={**headers, "Content-Type": "application/pdf"}) as response:
                report = await response.json()
            async with session.get(f"{url}/api/v1/reports/{report['id']}/report.html?lang=en",
                                   headers=headers) as html:
                page = await html.text()
            async with session.get(f"{url}/api/v1/requests/req-2026-0001", headers=headers) as request:
                found = await request.json()
    finally:
        await runner.cleanup()

    assert report["archive"]["signed_by_qsign"] is True
    assert [item["id"] for item in report["archive"]["requests"]] == ["req-2026-0001"]
    assert "qsign signed this file" in page
    assert 'href="/api/v1/requests/req-2026-0001"' in page
    assert found["request"]["signed_sha256"] == report["file"]["sha256"]


async def test_password_login_and_csrf(auditor_state: tuple[Path, str]) -> None:
    state, _ = auditor_state
    runner, url = await _start(state)
    try:
        # unsafe=True: aiohttp keeps no cookies for IP-address hosts otherwise.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(f"{url}/", allow_redirects=False) as start:
                assert start.status == 303 and start.headers["Location"].startswith("/login")
            async with session.get(f"{url}/login?lang=en") as login_page:
                csrf = re.search(r'name="csrf" value="([^"]+)"', await login_page.text()).group(1)
            async with session.post(f"{url}/login?lang=en", data={"user": "li.shen", "password": "wrong password",
                                                                  "csrf": csrf}) as wrong:
                wrong_page = await wrong.text()
            async with session.post(f"{url}/login?lang=en", data={"user": "li.shen", "password": PASSWORD,
                                                                  "csrf": "forged"}) as forged:
                assert forged.status == 403
            async with session.post(f"{url}/login?lang=en", data={"user": "li.shen", "password": PASSWORD,
                                                                  "csrf": csrf}, allow_redirects=False) as good:
                assert good.status == 303
            async with session.get(f"{url}/?lang=en") as index:
                index_page = await index.text()
    finally:
        await runner.cleanup()

    assert wrong.status == 401
    assert "Unknown user name or wrong password." in wrong_page
    assert index.status == 200
    assert "li.shen" in index_page and 'enctype="multipart/form-data"' in index_page
    with Archive.open(state, with_key=False) as archive:
        logins = [(entry.actor, entry.outcome) for entry in archive.audit_entries() if entry.action == "verify.login"]
    assert logins == [("li.shen", "denied"), ("li.shen", "denied"), ("li.shen", "success")]
