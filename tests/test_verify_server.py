"""The verification HTTP service on 127.0.0.1: same report as the CLI, errors, limits, start and stop."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from verify_pki import (  # noqa: F401  (fixtures)
    TestPki,
    real_pdf,
    sign_cms,
    signed_pdf,
    test_pki,
    verify_state,
    write_state_dir,
)

from qsign.config import load_config
from verify_service.server import start_server
from verify_service.settings import service_settings
from verify_service.trust import trust_from_config

FORBIDDEN_PACKAGES = ("agent", "hsm", "token_drivers", "pkcs11")


def _without_time(report: dict) -> dict:
    """Drop the fields that differ between two runs over the same file: time, report id, who asked.

    A revocation check made at the validation time names that time as well (``checked_at``).
    """
    result = {key: value for key, value in report.items()
              if key not in ("validation_time", "id", "requested_by", "archive")}
    result["signatures"] = [
        {**signature, "revocation": {**signature["revocation"], "checked_at": None}}
        if signature.get("revocation") and signature["revocation"]["checked_at"] == report["validation_time"]
        else signature
        for signature in report["signatures"]]
    return result


def test_no_token_packages_imported() -> None:
    code = (
        "import json, sys\n"
        "import verify_service, verify_service.cli, verify_service.server, verify_service.validate\n"
        "import verify_service.summary, verify_service.settings\n"
        f"print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] in {FORBIDDEN_PACKAGES!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            check=True)

    assert json.loads(result.stdout) == []


@pytest.fixture
def small_state(test_pki: TestPki, tmp_path: Path) -> Path:
    """A state dir with a 1 MiB upload limit."""
    return write_state_dir(tmp_path / "state", test_pki, "\n[verify_service]\nmax_upload_mb = 1\n")


@pytest.fixture
async def base_url(small_state: Path) -> AsyncIterator[str]:
    config = load_config(small_state)
    runner, url = await start_server(service_settings(config, trust_from_config(config)), "127.0.0.1", 0)
    try:
        yield url
    finally:
        await runner.cleanup()


async def test_healthz(base_url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/healthz") as response:
        body = await response.json()

    assert response.status == 200
    assert body["status"] == "ok"


async def test_raw_pdf_upload(base_url: str, signed_pdf: Path) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/api/v1/verify?name=notice.pdf", data=signed_pdf.read_bytes(),
                                headers={"Content-Type": "application/pdf"}) as response:
            report = await response.json()

    assert response.status == 200
    assert report["verdict"] == "TOTAL_PASSED"
    assert report["file"]["name"] == "notice.pdf"
    assert response.headers["X-Request-Id"]


async def test_multipart_detached_cms(base_url: str, test_pki: TestPki) -> None:
    content = real_pdf("xtu.pdf").read_bytes()
    signature = await asyncio.to_thread(sign_cms, content, test_pki.signer)
    form = aiohttp.FormData()
    form.add_field("file", signature, filename="../../etc/xtu.pdf.p7s", content_type="application/pkcs7-signature")
    form.add_field("content", content, filename="通知.pdf", content_type="application/pdf")

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/api/v1/verify", data=form) as response:
            report = await response.json()

    assert response.status == 200
    assert report["verdict"] == "TOTAL_PASSED"
    assert report["file"]["name"] == "xtu.pdf.p7s"
    assert report["content"]["name"] == "通知.pdf"


@pytest.mark.parametrize(("accept_language", "expected"), [
    ("zh-CN,zh;q=0.9,en;q=0.5", "文件 upload.pdf 既不是 PDF，也不是 CMS 签名（.p7s）。"),
    ("en-US,en;q=0.8", "The file upload.pdf is neither a PDF nor a CMS signature (.p7s)."),
])
async def test_error_message_language(base_url: str, accept_language: str, expected: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/api/v1/verify", data=b"plain text, not a PDF",
                                headers={"Content-Type": "application/pdf",
                                         "Accept-Language": accept_language}) as response:
            body = await response.json()

    assert response.status == 415
    assert body["code"] == "not_a_pdf"
    assert body["message"] == expected
    assert body["request_id"] == response.headers["X-Request-Id"]


async def test_upload_over_limit(base_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/api/v1/verify", data=b"%PDF-1.7\n" + b"0" * (2 * 1024 * 1024),
                                headers={"Content-Type": "application/pdf",
                                         "Accept-Language": "en"}) as response:
            body = await response.json()

    assert response.status == 413
    assert body["code"] == "upload_too_large"
    assert body["message"] == "The upload is larger than the limit of 1 MiB."


async def test_chunked_upload_over_limit(base_url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"%PDF-1.7\n"
        for _ in range(40):
            yield b"0" * 65536

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/api/v1/verify", data=chunks(),
                                headers={"Content-Type": "application/pdf"}) as response:
            body = await response.json()

    assert response.status == 413
    assert body["code"] == "upload_too_large"


@pytest.mark.parametrize(("fields", "code", "status"), [
    ({"content": b"x"}, "upload_invalid", 400),
    ({"file": b"%PDF-1.7", "comment": b"x"}, "upload_invalid", 400),
])
async def test_multipart_field_errors(base_url: str, fields: dict[str, bytes], code: str, status: int) -> None:
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value, filename=f"{name}.bin")

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/api/v1/verify", data=form) as response:
            body = await response.json()

    assert response.status == status
    assert body["code"] == code


async def test_unsupported_content_type(base_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/api/v1/verify", data=b"{}",
                                headers={"Content-Type": "application/json"}) as response:
            body = await response.json()

    assert response.status == 415
    assert body["code"] == "unsupported_media_type"


async def test_unknown_path_json_error(base_url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/api/v2/nothing") as response:
        body = await response.json()

    assert response.status == 404
    assert body["code"] == "not_found"


def test_serve_matches_cli(signed_pdf: Path, verify_state: Path) -> None:
    """``qsign verify serve`` on port 0 prints its URL first; its report equals the CLI's for one file."""
    command = [sys.executable, "-m", "qsign.cli", "verify"]
    cli = subprocess.run([*command, str(signed_pdf), "--state-dir", str(verify_state), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr

    server = subprocess.Popen([*command, "serve", "--state-dir", str(verify_state), "--listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert not url.endswith(":0")

        async def post() -> dict:
            form = aiohttp.FormData()
            form.add_field("file", signed_pdf.read_bytes(), filename=signed_pdf.name,
                           content_type="application/pdf")
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{url}/api/v1/verify", data=form) as response:
                    assert response.status == 200
                    return await response.json()

        http_report = asyncio.run(post())
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)

    assert server.returncode == 0, stderr
    assert _without_time(http_report) == _without_time(json.loads(cli.stdout))


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_on_signal(verify_state: Path, stop_signal: signal.Signals) -> None:
    server = subprocess.Popen([sys.executable, "-m", "qsign.cli", "verify", "serve", "--state-dir",
                               str(verify_state), "--listen", "127.0.0.1:0", "--verbose"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()

        async def healthz() -> int:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
                return response.status

        status = asyncio.run(healthz())
    finally:
        server.send_signal(stop_signal)
        _, stderr = server.communicate(timeout=30)

    assert status == 200
    assert server.returncode == 0, stderr
    assert "verification service stopped" in stderr
    assert "Traceback" not in stderr
