"""The verification web pages in headless Chromium (Debian's /usr/bin/chromium through Playwright).

An auditor logs in, uploads a signed PDF and reads the report, on a 360 px wide phone screen, in zh-CN
and in English. Screenshots go to test-results/screenshots/ for the test artifacts.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import verify_attacks as attacks
from verify_pki import TestPki, signed_pdf, test_pki, write_state_dir  # noqa: F401  (fixtures)

from qsign.cli import main

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-results" / "screenshots"
PASSWORD = "auditor-password-2"
PHONE = {"width": 360, "height": 740}


@pytest.fixture(scope="module")
def service(test_pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``qsign verify serve`` on 127.0.0.1 with the auditor ``wang.fang``; yields the base URL."""
    state = write_state_dir(tmp_path_factory.mktemp("web-state"), test_pki)
    sys.stdin = io.StringIO(PASSWORD + "\n")
    try:
        assert main(["verify", "users", "add", "wang.fang", "--password-stdin", "--state-dir", str(state)]) == 0
    finally:
        sys.stdin = sys.__stdin__
    server = subprocess.Popen([sys.executable, "-m", "qsign.cli", "verify", "serve", "--state-dir", str(state),
                               "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield server.stdout.readline().strip()
    finally:
        server.terminate()
        server.communicate(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed")
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _phone_page(browser, language: str):
    locale = "zh-CN" if language == "zh_CN" else "en-US"
    context = browser.new_context(viewport=PHONE, locale=locale, is_mobile=True, device_scale_factor=2)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    return context, page, problems


def _fits_phone(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


@pytest.mark.parametrize(("language", "texts"), [
    ("zh_CN", ("审计员登录", "验证已签名的文档", "验证报告", "TOTAL_PASSED", "签名人")),
    ("en", ("Auditor login", "Verify a signed document", "Verification report", "TOTAL_PASSED", "Signer")),
])
def test_login_upload_report_on_phone(browser, service: str, signed_pdf: Path, language: str,
                                      texts: tuple[str, ...]) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context, page, problems = _phone_page(browser, language)
    try:
        page.goto(f"{service}/?lang={language}")
        login_title = page.locator("h1").inner_text()
        assert _fits_phone(page)
        page.screenshot(path=str(SCREENSHOTS / f"verify-login-{language}.png"), full_page=True)
        page.fill("#user", "wang.fang")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")

        upload_title = page.locator("h1").inner_text()
        assert _fits_phone(page)
        page.screenshot(path=str(SCREENSHOTS / f"verify-upload-{language}.png"), full_page=True)
        page.set_input_files("#file", str(signed_pdf))
        page.click("main button[type=submit]")

        page.wait_for_url("**/report.html*")
        report_title = page.locator("h1").inner_text()
        verdict = page.locator("p.verdict").first.inner_text()
        body = page.locator("main").inner_text()
        assert _fits_phone(page)
        page.screenshot(path=str(SCREENSHOTS / f"verify-report-{language}.png"), full_page=True)
    finally:
        context.close()

    assert (login_title, upload_title, report_title) == texts[:3]
    assert verdict.startswith(texts[3])
    assert texts[4] in body
    assert problems == []


def test_failed_report_page(browser, service: str, signed_pdf: Path, tmp_path: Path) -> None:
    """An attacked file: the report page shows TOTAL_FAILED and the reason, in English."""
    attacked = tmp_path / "attacked.pdf"
    attacked.write_bytes(attacks.isa_page_content(signed_pdf.read_bytes()))
    context, page, problems = _phone_page(browser, "en")
    try:
        page.goto(f"{service}/login?lang=en")
        page.fill("#user", "wang.fang")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.set_input_files("#file", str(attacked))
        page.click("main button[type=submit]")
        page.wait_for_url("**/report.html*")
        verdict = page.locator("p.verdict").first.inner_text()
        body = page.locator("main").inner_text()
        page.screenshot(path=str(SCREENSHOTS / "verify-report-failed-en.png"), full_page=True)
    finally:
        context.close()

    assert verdict.startswith("TOTAL_FAILED / FORMAT_FAILURE")
    assert "modified_after_signing" in body
    assert problems == []
