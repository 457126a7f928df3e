"""The agent's web pages in headless Chromium at phone size, against ``qsign agent serve`` with SoftHSM2 tokens.

Each step saves a screenshot (360 × 740 viewport, full page) under ``test-results/screenshots/``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from agent.web.auth import PasswordStore
from helpers.agent_rig import AgentProcess, copy_state, set_agent_config

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"width": 360, "height": 740}
REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / os.environ.get("QSIGN_TEST_RESULTS", "test-results") / "screenshots"
USERS = ("admin-sun", "reviewer-wang", "operator-zhao", "officer-li", "auditor-chen")
CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
LOCALES = {"zh_CN": "zh-CN", "en": "en-US"}


def password(user: str) -> str:
    return f"pass-{user}-2026"


@pytest.fixture(scope="module")
def agent(softhsm_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    state = copy_state(softhsm_state, tmp_path_factory.mktemp("web") / "state")
    set_agent_config(state, advertise=False, token_wait_seconds=10)
    store = PasswordStore(state / "agent" / "web-passwords.json")
    for user in USERS:
        store.set_password(user, password(user))
    process = AgentProcess(state)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_sync.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def a4_pdf(path: Path, title: str) -> Path:
    """Write a one-page A4 PDF (595 × 842 pt) with a title in Chinese and English."""
    image = Image.new("RGB", (595, 842), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(CJK_FONT), 22) if CJK_FONT.exists() else ImageFont.load_default()
    draw.text((60, 80), title, fill="black", font=font)
    draw.text((60, 120), "税务事项通知书 · Tax matters notice", fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PDF", resolution=72)
    # Pillow writes generation 65536 for the free entry 0 of the xref table; PDF readers expect 65535.
    path.write_bytes(buffer.getvalue().replace(b"0000000000 65536 f", b"0000000000 65535 f"))
    return path


def seal_png(path: Path) -> Path:
    image = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse([4, 4, 196, 196], outline=(200, 0, 0, 255), width=10)
    image.save(path, "PNG")
    return path


class Screens:
    """Numbered screenshots of one test, named ``<test>-<language>-<nn>-<step>.png``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shot(self, page: object, step: str) -> None:
        self.count += 1
        page.screenshot(path=str(SCREENSHOTS / f"{self.name}-{self.count:02d}-{step}.png"), full_page=True)


def phone(browser: object, language: str) -> object:
    context = browser.new_context(viewport=PHONE, locale=LOCALES[language], has_touch=True, is_mobile=True,
                                  accept_downloads=True)
    context.set_default_timeout(20_000)
    return context


def sign_in(page: object, base_url: str, user: str) -> None:
    page.goto(f"{base_url}/web/login")
    page.fill("#username", user)
    page.fill("#password", password(user))
    page.click("form.card button[type=submit]")
    page.wait_for_url(re.compile(r"/web/$"))


async def verify_with_service(state_dir: Path, data: bytes) -> dict:
    import aiohttp

    from qsign.config import load_config
    from verify_service.server import start_server
    from verify_service.settings import service_settings
    from verify_service.trust import trust_from_config

    config = load_config(state_dir)
    runner, base_url = await start_server(service_settings(config, trust_from_config(config)), "127.0.0.1", 0)
    try:
        form = aiohttp.FormData()
        form.add_field("file", data, filename="signed.pdf", content_type="application/pdf")
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base_url}/api/v1/verify", data=form) as response:
                assert response.status == 200, await response.text()
                return await response.json()
    finally:
        await runner.cleanup()


def run_async(coroutine: object) -> object:
    """Run a coroutine in its own thread, because Playwright's sync API keeps an event loop in this one."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, coroutine).result()


def widget_rects(data: bytes) -> list[list[float]]:
    from pyhanko.pdf_utils.reader import PdfFileReader

    reader = PdfFileReader(io.BytesIO(data))
    rects = []
    for field in reader.root["/AcroForm"]["/Fields"]:
        field = field.get_object()
        if field.get("/FT") == "/Sig" and "/Rect" in field:
            rects.append([float(value) for value in field["/Rect"]])
    return rects


def create_request(page: object, base_url: str, pdf: Path, template: str) -> str:
    page.goto(f"{base_url}/web/requests/new")
    page.set_input_files("#file", str(pdf))
    page.select_option("#template_id", template)
    page.select_option("#signer", "officer-li")
    page.click("form.card button[type=submit]")
    page.wait_for_url(re.compile(r"/web/requests/req-[0-9a-f]+$"))
    return page.url.rsplit("/", 1)[1]


def sign_as_officer(page: object, base_url: str, request_id: str, state_dir: Path, screens: Screens) -> bytes:
    page.goto(f"{base_url}/web/requests/{request_id}/sign")
    page.wait_for_selector("img[alt]")
    screens.shot(page, "sign-page")
    page.check("input[name=confirm]")
    pin_field = page.locator("#pin")
    assert pin_field.get_attribute("autocomplete") == "off"
    assert page.locator("#sign-form").get_attribute("method") == "post"
    pin_field.fill((state_dir / "secrets" / "officer.pin").read_text().strip())
    page.click("#sign-form button[type=submit]")
    page.wait_for_url(re.compile(rf"/web/requests/{request_id}/sign$"))
    assert "pin" not in page.url
    page.wait_for_selector("#download:not([hidden]) a", timeout=30_000)
    assert page.locator("#live-state").get_attribute("class") == "state state-signed"
    screens.shot(page, "signed")
    with page.expect_download() as download:
        page.click("#download a")
    return Path(download.value.path()).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_whole_flow_at_phone_size(agent: AgentProcess, browser: object, tmp_path: Path, language: str) -> None:
    base = agent.base_url
    screens = Screens(f"flow-{language}")
    pdf = a4_pdf(tmp_path / f"notice-{language}.pdf", f"Flow {language}")
    expected = {"zh_CN": ("等待审核", "已完成：已签名", "签名"), "en": ("Waiting for review", "Done: signed", "Sign")}[language]

    operator_context = phone(browser, language)
    operator = operator_context.new_page()
    operator.goto(f"{base}/web/")
    screens.shot(operator, "sign-in")
    sign_in(operator, base, "operator-zhao")
    screens.shot(operator, "requester-home")
    operator.goto(f"{base}/web/requests/new")
    screens.shot(operator, "new-request")
    request_id = create_request(operator, base, pdf, "officer-signature")
    assert operator.locator("#live-state").inner_text() == expected[0]
    screens.shot(operator, "request-waiting")

    reviewer_context = phone(browser, language)
    reviewer = reviewer_context.new_page()
    sign_in(reviewer, base, "reviewer-wang")
    reviewer.goto(f"{base}/web/review")
    screens.shot(reviewer, "review-queue")
    reviewer.click(f"a[href='/web/requests/{request_id}']")
    reviewer.wait_for_selector("#review-form")
    assert len(reviewer.locator("#sha256").inner_text().replace(" ", "").strip()) == 64
    page_image = reviewer.locator("figure.page img").first
    page_image.scroll_into_view_if_needed()
    reviewer.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=page_image.element_handle())
    screens.shot(reviewer, "review-request")
    reviewer.fill("#comment", "内容已核对 / checked")
    reviewer.click("#review-form button[value=approve]")
    reviewer.wait_for_url(re.compile(rf"/web/requests/{request_id}$"))
    screens.shot(reviewer, "approved")

    officer_context = phone(browser, language)
    officer = officer_context.new_page()
    sign_in(officer, base, "officer-li")
    officer.goto(f"{base}/web/inbox")
    assert officer.locator(f"a[href='/web/requests/{request_id}']").count() == 1
    screens.shot(officer, "officer-inbox")
    signed = sign_as_officer(officer, base, request_id, agent.state_dir, screens)

    # The requester's page, opened before the signature, follows the state through the event stream.
    operator.wait_for_function("document.getElementById('live-state').textContent === arguments[0]"
                               .replace("arguments[0]", repr(expected[1])), timeout=20_000)
    screens.shot(operator, "requester-sees-signed")

    officer.goto(f"{base}/web/inbox")
    assert officer.locator(f"a[href='/web/requests/{request_id}']").count() == 1
    screens.shot(officer, "officer-history")

    report = run_async(verify_with_service(agent.state_dir, signed))
    assert report["verdict"] in ("valid", "TOTAL_PASSED"), report
    assert report["signatures"][0]["intact"] is True
    assert report["signatures"][0]["valid"] is True
    assert report["signatures"][0]["trusted"] is True
    for context in (operator_context, reviewer_context, officer_context):
        context.close()
