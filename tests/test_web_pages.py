"""The agent's web pages in headless Chromium at phone size, against ``qsign agent serve`` with SoftHSM2 tokens.

Each step saves a screenshot (360 × 740 viewport, full page) under ``test-results/screenshots/``, and
``test_every_page_in_both_languages`` saves one of every page template in Chinese and in English.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import os
import re
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from PIL import Image, ImageDraw, ImageFont

from agent.web.auth import PasswordStore
from conftest import run_qsign
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
LANGUAGES = list(LOCALES)
TEMPLATES = REPO / "agent" / "web" / "templates"
#: Templates that only other templates extend or include; every other template is a page.
PARTIAL_TEMPLATES = {"base.html", "live.html", "preview.html", "rows.html", "rules.html"}


def password(user: str) -> str:
    return f"pass-{user}-2026"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """An agent on its own state dir, whose test PKI (CRLs, OCSP) is served on a free port for the module."""
    from softhsm_setup.pki_server import PkiServer

    state = tmp_path_factory.mktemp("web") / "state"
    port = _free_port()
    completed = run_qsign("softhsm", "init", "--json", "--pki-base-url", f"http://127.0.0.1:{port}", state_dir=state)
    assert completed.returncode == 0, completed.stderr
    pki = PkiServer(state, "127.0.0.1", port).start()
    # The pause before the token signs keeps the "signing" state on screen long enough to be seen.
    set_agent_config(state, advertise=False, token_wait_seconds=10, sign_attempts_per_minute=60,
                     pause_before_sign_seconds=2.0)
    # Backups are signed; the HSM seal key of the test tokens signs them here.
    raw = tomllib.loads((state / "qsign.toml").read_text(encoding="utf-8"))
    raw.setdefault("archive", {})["checkpoint_profile"] = "seal"
    (state / "qsign.toml").write_text(tomli_w.dumps(raw), encoding="utf-8")
    store = PasswordStore(state / "agent" / "web-passwords.json")
    for user in USERS:
        store.set_password(user, password(user))
    process = AgentProcess(state)
    process.start()
    yield process
    process.stop()
    pki.stop()


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

    def shot(self, page: object, step: str) -> str:
        """Save a full-page screenshot and return the page's template name (from ``body[data-template]``)."""
        self.count += 1
        # Page previews load lazily; load them all so that the full-page picture shows them.
        page.evaluate("""() => Promise.all([...document.images].map(image => {
            image.loading = "eager";
            return image.complete ? null : new Promise(done => { image.onload = image.onerror = done; });
        }))""")
        page.screenshot(path=str(SCREENSHOTS / f"{self.name}-{self.count:02d}-{step}.png"), full_page=True)
        return page.get_attribute("body", "data-template") or ""


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
    # The test certificates name CRL and OCSP URLs of the module's PKI server; the service fetches them there.
    runner, base_url = await start_server(service_settings(config, trust_from_config(config, online=True)),
                                          "127.0.0.1", 0)
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
    signing = {"zh_CN": "正在签名", "en": "Signing"}
    page.wait_for_function("labels => labels.includes(document.getElementById('live-state').textContent)",
                           arg=list(signing.values()))
    screens.shot(page, "signing")
    page.wait_for_selector("#download:not([hidden]) a", timeout=30_000)
    # The script loads the page again after a new stored state; wait for that page before the screenshot.
    page.wait_for_selector("#live[data-state=signed]", timeout=30_000)
    page.wait_for_load_state()
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
    operator.wait_for_selector("#live[data-state=signed]", timeout=20_000)
    operator.wait_for_load_state()
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


@pytest.mark.slow
@pytest.mark.parametrize("language", LANGUAGES)
def test_template_seal_lands_where_tapped(agent: AgentProcess, browser: object, tmp_path: Path,
                                          language: str) -> None:
    base = agent.base_url
    template_id = f"seal-test-{language.lower().replace('_', '')}"
    screens = Screens(f"template-seal-{language}")
    policy_file = agent.state_dir / "policy.toml"
    backups_before = set((agent.state_dir / "policy-backups").glob("*.toml"))

    admin_context = phone(browser, language)
    admin = admin_context.new_page()
    sign_in(admin, base, "admin-sun")
    admin.goto(f"{base}/web/admin/templates")
    screens.shot(admin, "templates")
    admin.click("a[href='/web/admin/templates/new']")
    admin.fill("#id", template_id)
    admin.fill("#name_zh", "印章位置测试")
    admin.fill("#name_en", "Seal placement test")
    admin.fill("#required_approvals", "0")
    admin.fill("#reason", "印章测试")
    admin.fill("#location", "测试市")
    admin.set_input_files("#seal_image", str(seal_png(tmp_path / "seal.png")))
    preview = admin.locator("#seal-preview")
    preview.scroll_into_view_if_needed()
    admin.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle())
    box = preview.bounding_box()
    border = 1  # the preview's CSS border; the page picture starts inside it
    preview.tap(position={"x": border + (box["width"] - 2 * border) * 0.3,
                          "y": border + (box["height"] - 2 * border) * 0.75})
    rect = [float(admin.input_value(f"#{name}")) for name in ("x1", "y1", "x2", "y2")]
    # The default seal is 150 × 75 pt; its centre goes where the page was tapped (A4: 595 × 842 pt).
    # One CSS pixel of the 360 px wide preview is about 1.8 pt.
    assert rect[0] + 75 == pytest.approx(0.3 * 595, abs=3)
    assert rect[1] + 37.5 == pytest.approx(0.25 * 842, abs=3)
    assert rect[2] - rect[0] == pytest.approx(150)
    assert admin.locator("#seal-marker").is_visible()
    screens.shot(admin, "seal-placed")
    admin.click("#template-form button[type=submit]")
    admin.wait_for_url(re.compile(r"/web/admin/templates$"))
    screens.shot(admin, "template-saved")

    policy_text = policy_file.read_text(encoding="utf-8")
    assert f"[templates.{template_id}]" in policy_text
    assert "印章位置测试" in policy_text
    assert len(set((agent.state_dir / "policy-backups").glob("*.toml")) - backups_before) == 1
    assert (agent.state_dir / "seals" / f"{template_id}.png").exists()

    operator_context = phone(browser, language)
    operator = operator_context.new_page()
    sign_in(operator, base, "operator-zhao")
    request_id = create_request(operator, base, a4_pdf(tmp_path / "seal.pdf", "Seal"), template_id)
    officer_context = phone(browser, language)
    officer = officer_context.new_page()
    sign_in(officer, base, "officer-li")
    signed = sign_as_officer(officer, base, request_id, agent.state_dir, screens)

    rects = widget_rects(signed)
    assert len(rects) == 1
    assert rects[0] == pytest.approx(rect, abs=0.1)
    for context in (admin_context, operator_context, officer_context):
        context.close()


@pytest.mark.slow
def test_template_seal_on_sample_page(agent: AgentProcess, browser: object, tmp_path: Path) -> None:
    base = agent.base_url
    sample = REPO / "tests" / "data" / "real" / "xiaoshan-sample.pdf"
    page_size = (362.83, 272.13)
    screens = Screens("template-sample-en")
    admin_context = phone(browser, "en")
    admin = admin_context.new_page()
    sign_in(admin, base, "admin-sun")
    admin.goto(f"{base}/web/admin/templates/new")
    admin.fill("#id", "seal-on-sample")
    admin.fill("#name_zh", "样例页面印章")
    admin.fill("#name_en", "Seal on a sample page")
    admin.fill("#required_approvals", "0")
    admin.set_input_files("#sample_pdf", str(sample))
    admin.click("#show-sample")
    admin.wait_for_selector("#sample-size")

    assert admin.input_value("#name_en") == "Seal on a sample page"
    placer = admin.locator("#placer")
    assert float(placer.get_attribute("data-page-width")) == pytest.approx(page_size[0], abs=0.01)
    assert float(placer.get_attribute("data-page-height")) == pytest.approx(page_size[1], abs=0.01)
    preview = admin.locator("#seal-preview")
    assert "/admin/sample-pages/" in preview.get_attribute("src")
    preview.scroll_into_view_if_needed()
    admin.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle())
    assert preview.evaluate("img => img.naturalWidth / img.naturalHeight") == pytest.approx(
        page_size[0] / page_size[1], abs=0.01)
    screens.shot(admin, "sample-shown")
    box = preview.bounding_box()
    # Tapping near the bottom right corner puts the seal against the page's edges, not beyond them.
    preview.tap(position={"x": box["width"] * 0.97, "y": box["height"] * 0.97})
    rect = [float(admin.input_value(f"#{name}")) for name in ("x1", "y1", "x2", "y2")]
    assert rect[0] >= 0
    assert rect[1] >= 0
    assert rect[2] <= page_size[0]
    assert rect[3] <= page_size[1]
    assert rect[2] - rect[0] == pytest.approx(150)
    screens.shot(admin, "seal-placed")
    admin.set_input_files("#seal_image", str(seal_png(tmp_path / "seal.png")))
    admin.click("#template-form button[type=submit]")
    admin.wait_for_url(re.compile(r"/web/admin/templates$"))

    saved = tomllib.loads((agent.state_dir / "policy.toml").read_text(encoding="utf-8"))
    saved_rect = saved["templates"]["seal-on-sample"]["seal"]["rect"]
    assert saved_rect == pytest.approx(rect, abs=0.01)
    assert 0 <= saved_rect[0] < saved_rect[2] <= page_size[0]
    assert 0 <= saved_rect[1] < saved_rect[3] <= page_size[1]

    operator_context = phone(browser, "en")
    operator = operator_context.new_page()
    sign_in(operator, base, "operator-zhao")
    request_id = create_request(operator, base, sample, "seal-on-sample")
    officer_context = phone(browser, "en")
    officer = officer_context.new_page()
    sign_in(officer, base, "officer-li")
    signed = sign_as_officer(officer, base, request_id, agent.state_dir, screens)

    assert widget_rects(signed) == [pytest.approx(rect, abs=0.1)]
    for context in (admin_context, operator_context, officer_context):
        context.close()


def test_template_sample_not_pdf(agent: AgentProcess, browser: object, tmp_path: Path) -> None:
    context = phone(browser, "zh_CN")
    page = context.new_page()
    sign_in(page, agent.base_url, "admin-sun")
    page.goto(f"{agent.base_url}/web/admin/templates/new")
    page.set_input_files("#sample_pdf", str(seal_png(tmp_path / "not-a-pdf.png")))
    page.click("#show-sample")
    page.wait_for_selector("#template-error")

    assert "PDF" in page.locator("#template-error").inner_text()
    assert "/admin/seal-preview.png" in page.locator("#seal-preview").get_attribute("src")
    assert page.locator("#placer").get_attribute("data-page-width") == "595"
    context.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_template_invalid_shows_error(agent: AgentProcess, browser: object, language: str) -> None:
    context = phone(browser, language)
    page = context.new_page()
    sign_in(page, agent.base_url, "admin-sun")
    before = (agent.state_dir / "policy.toml").read_text(encoding="utf-8")
    page.goto(f"{agent.base_url}/web/admin/templates/new")
    page.fill("#id", "bad-seal")
    page.fill("#name_zh", "坏")
    page.fill("#name_en", "Bad")
    page.fill("#x1", "300")
    page.fill("#x2", "100")
    page.click("#template-form button[type=submit]")

    assert "x2 > x1" in page.locator("#template-error").inner_text()
    assert (agent.state_dir / "policy.toml").read_text(encoding="utf-8") == before
    Screens(f"template-invalid-{language}").shot(page, "error")
    context.close()


def test_csrf_token_required(agent: AgentProcess, browser: object, tmp_path: Path) -> None:
    context = phone(browser, "zh_CN")
    page = context.new_page()
    sign_in(page, agent.base_url, "operator-zhao")
    request_id = create_request(page, agent.base_url, a4_pdf(tmp_path / "csrf.pdf", "CSRF"), "officer-signature")
    url = f"{agent.base_url}/web/requests/{request_id}/cancel"

    forged = page.request.post(url, form={"csrf": "0" * 64}, max_redirects=0)
    missing = page.request.post(url, form={}, max_redirects=0)

    assert forged.status == 403
    assert missing.status == 403
    assert "表单已过期" in forged.text()
    page.goto(f"{agent.base_url}/web/requests/{request_id}")
    assert page.locator("#live-state").inner_text() == "等待审核"

    page.click("form[action$='/cancel'] button")
    page.wait_for_url(re.compile(rf"/web/requests/{request_id}$"))
    assert page.locator("#live-state").inner_text() == "已取消"
    context.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_csp_blocks_injected_script(agent: AgentProcess, browser: object, language: str) -> None:
    context = phone(browser, language)
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)

    def inject(route: object) -> None:
        response = route.fetch()
        body = response.text().replace("</main>", "<script>window.injected = 1;</script></main>")
        route.fulfill(response=response, body=body)

    page.route("**/web/login*", inject)
    response = page.goto(f"{agent.base_url}/web/login")

    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "window.injected" in page.content()
    assert page.evaluate("typeof window.injected") == "undefined"
    assert violations, "Chromium reported no CSP violation"
    Screens(f"csp-{language}").shot(page, "injected-script-blocked")
    context.close()


@pytest.mark.slow
@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_paired_phone_signed_out_when_revoked(agent: AgentProcess, browser: object, language: str) -> None:
    base = agent.base_url
    screens = Screens(f"pairing-{language}")
    admin_context = phone(browser, language)
    admin = admin_context.new_page()
    sign_in(admin, base, "admin-sun")
    admin.goto(f"{base}/web/admin/pairing")
    admin.select_option("#user", "officer-li")
    admin.click("form.card button[type=submit]")
    assert admin.locator("img.qr").get_attribute("src").startswith("data:image/svg+xml")
    pairing_url = admin.locator("#pairing-url").inner_text().strip()
    screens.shot(admin, "pairing-qr")

    phone_context = phone(browser, language)
    handset = phone_context.new_page()
    handset.goto(pairing_url)
    screens.shot(handset, "phone-pair")
    handset.fill("#device_name", f"Li phone {language}")
    handset.click("form.card button[type=submit]")
    handset.wait_for_url(re.compile(r"/web/$"))
    handset.goto(f"{base}/web/inbox")
    assert handset.url.endswith("/web/inbox")
    screens.shot(handset, "phone-signed-in")

    admin.goto(f"{base}/web/admin/devices")
    screens.shot(admin, "devices")
    row = admin.locator("li.device", has_text=f"Li phone {language}")
    row.locator("button").click()
    admin.wait_for_url(re.compile(r"/web/admin/devices$"))
    assert admin.locator("li.device", has_text=f"Li phone {language}").locator("button").count() == 0

    handset.goto(f"{base}/web/inbox")
    assert "reason=revoked" in handset.url
    notice = handset.locator("#signed-out-notice").inner_text()
    assert ("已被吊销" if language == "zh_CN" else "revoked") in notice
    screens.shot(handset, "phone-signed-out")
    for context in (admin_context, phone_context):
        context.close()


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_admin_pages(agent: AgentProcess, browser: object, language: str) -> None:
    base = agent.base_url
    screens = Screens(f"admin-{language}")
    context = phone(browser, language)
    page = context.new_page()

    page.goto(f"{base}/web/login")
    page.fill("#username", "admin-sun")
    page.fill("#password", "wrong password")
    page.click("form.card button[type=submit]")
    assert ("用户名或密码错误" if language == "zh_CN" else "user name or the password is wrong") in \
        page.locator(".error").inner_text()
    screens.shot(page, "sign-in-failed")

    sign_in(page, base, "admin-sun")
    page.goto(f"{base}/web/admin/users")
    screens.shot(page, "users")
    page.fill("#id", f"reviewer-{language.lower().replace('_', '')}")
    page.fill("#name", "新审核人" if language == "zh_CN" else "New reviewer")
    page.check("input[name=roles][value=reviewer]")
    page.click("form.card button[type=submit]")
    page.wait_for_url(re.compile(r"/web/admin/users$"))
    assert f"[users.reviewer-{language.lower().replace('_', '')}]" in \
        (agent.state_dir / "policy.toml").read_text(encoding="utf-8")

    page.goto(f"{base}/web/admin/tokens")
    assert page.locator("text=qsign-officer").count() >= 1
    # Without pcscd (or without readers) the page explains in the user's language; pyscard's English stays in the log.
    if page.locator("#reader-error").count():
        reader_error = page.locator("#reader-error").inner_text()
        assert "0x8010" not in reader_error
        assert ("读卡器" if language == "zh_CN" else "card readers") in reader_error
    screens.shot(page, "tokens")

    page.goto(f"{base}/web/audit")
    assert page.locator("#chain-status").get_attribute("class") == "ok"
    assert page.locator("ol.entries li").count() >= 5
    screens.shot(page, "audit")

    page.goto(f"{base}/web/admin/backup")
    screens.shot(page, "backup")
    with page.expect_download() as download:
        page.click("main form button[type=submit]")
    backup = Path(download.value.path())
    import tarfile

    with tarfile.open(backup) as tar:
        assert len(tar.getnames()) >= 2

    page.goto(f"{base}/web/requests/new")
    screens.shot(page, "admin-without-template")
    context.close()


def _post_sign_in(page: object, base_url: str, user: str, secret: str) -> object:
    """Send the sign-in form and return the response to its POST."""
    page.goto(f"{base_url}/web/login")
    page.fill("#username", user)
    page.fill("#password", secret)
    with page.expect_response(lambda response: response.request.method == "POST") as posted:
        page.click("form.card button[type=submit]")
    return posted.value


@pytest.mark.parametrize("language", LANGUAGES)
def test_sign_in_limited_after_failures(agent: AgentProcess, browser: object, language: str) -> None:
    base = agent.base_url
    user = f"limited-{language.lower().replace('_', '')}"
    admin_context = phone(browser, language)
    admin = admin_context.new_page()
    sign_in(admin, base, "admin-sun")
    admin.goto(f"{base}/web/admin/users")
    admin.fill("#id", user)
    admin.fill("#name", user)
    admin.check("input[name=roles][value=reviewer]")
    admin.click("form.card button[type=submit]")
    admin.wait_for_url(re.compile(r"/web/admin/users$"))
    PasswordStore(agent.state_dir / "agent" / "web-passwords.json").set_password(user, password(user))
    context = phone(browser, language)
    page = context.new_page()

    for _ in range(5):
        assert _post_sign_in(page, base, user, "wrong password").status == 401
    limited = _post_sign_in(page, base, user, password(user))

    assert limited.status == 429
    assert 0 < int(limited.headers["retry-after"]) <= 300
    message = page.locator(".error").inner_text()
    assert ("登录失败次数过多" if language == "zh_CN" else "Too many failed sign-ins") in message
    assert ("分钟后" if language == "zh_CN" else "Try again in 5 minutes") in message
    assert page.url.endswith("/web/login")
    Screens(f"sign-in-limited-{language}").shot(page, "too-many-failures")
    admin.goto(f"{base}/web/audit")
    entry = admin.locator("ol.entries li", has_text="web.sign_in_rate_limited").first
    assert f"user:{user}" in entry.inner_text()
    for each in (admin_context, context):
        each.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_role_required_page(agent: AgentProcess, browser: object, language: str) -> None:
    context = phone(browser, language)
    page = context.new_page()
    sign_in(page, agent.base_url, "operator-zhao")
    response = page.goto(f"{agent.base_url}/web/admin/users")

    assert response.status == 403
    assert ("管理员" if language == "zh_CN" else "Administrator") in page.locator(".error").inner_text()
    Screens(f"role-required-{language}").shot(page, "error")

    missing = page.goto(f"{agent.base_url}/web/no-such-page")
    assert missing.status == 404
    assert "/web/no-such-page" in page.locator(".error").inner_text()
    assert "An internal error" not in page.content()
    context.close()


def _cookie_attributes(response: object) -> dict[str, str]:
    """Map each cookie name of a ``requests`` response to its full Set-Cookie header value."""
    headers = response.raw.headers.getlist("Set-Cookie")
    return {header.split("=", 1)[0]: header for header in headers}


def _sign_in_with_requests(base_url: str, user: str) -> tuple[object, object]:
    import requests

    # The agent's certificate is self-signed; verify=False per call, because a REQUESTS_CA_BUNDLE in the
    # environment would override a session-wide setting.
    session = requests.Session()
    page = session.get(f"{base_url}/web/login", timeout=10, verify=False)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    response = session.post(f"{base_url}/web/login", data={"csrf": csrf, "username": user, "password": password(user),
                                                           "next": "/web/"}, allow_redirects=False, timeout=10, verify=False)
    return page, response


def test_cookie_flags_over_http(agent: AgentProcess) -> None:
    page, response = _sign_in_with_requests(agent.base_url, "officer-li")

    assert response.status_code == 303
    anon = _cookie_attributes(page)["qsign_anon"]
    session = _cookie_attributes(response)["qsign_session"]
    for header in (anon, session):
        assert "HttpOnly" in header
        assert "SameSite=Lax" in header
        assert "Secure" not in header


@pytest.mark.slow
def test_cookie_flags_secure_over_tls(softhsm_state: Path, tmp_path: Path) -> None:
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    state = copy_state(softhsm_state, tmp_path / "state")
    set_agent_config(state, advertise=False, tls="always")
    PasswordStore(state / "agent" / "web-passwords.json").set_password("officer-li", password("officer-li"))
    process = AgentProcess(state)
    base_url = process.start()
    try:
        page, response = _sign_in_with_requests(base_url, "officer-li")
    finally:
        process.stop()

    assert base_url.startswith("https://")
    assert response.status_code == 303
    for header in (_cookie_attributes(page)["qsign_anon"], _cookie_attributes(response)["qsign_session"]):
        assert "Secure" in header
        assert "HttpOnly" in header
        assert "SameSite=Lax" in header


@pytest.mark.parametrize("language", LANGUAGES)
def test_password_set_by_cli(agent: AgentProcess, browser: object, language: str) -> None:
    completed = run_qsign("web", "passwd", "auditor-chen", "--stdin", "--lang", "en", state_dir=agent.state_dir,
                          input="auditor-new-password\n")
    assert completed.returncode == 0, completed.stderr
    context = phone(browser, language)
    page = context.new_page()
    page.goto(f"{agent.base_url}/web/login")
    page.fill("#username", "auditor-chen")
    page.fill("#password", "auditor-new-password")
    page.click("form.card button[type=submit]")
    page.wait_for_url(re.compile(r"/web/$"))
    page.goto(f"{agent.base_url}/web/audit")

    assert page.locator("#chain-status").get_attribute("class") == "ok"
    assert page.locator("a[href='/web/admin/users']").count() == 0
    Screens(f"auditor-{language}").shot(page, "audit")
    context.close()


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_wrong_pin_then_right_pin(agent: AgentProcess, browser: object, tmp_path: Path, language: str) -> None:
    base = agent.base_url
    screens = Screens(f"wrong-pin-{language}")
    request_id = _approved_request(browser, base, tmp_path, language)

    officer_context = phone(browser, language)
    officer = officer_context.new_page()
    sign_in(officer, base, "officer-li")
    officer.goto(f"{base}/web/requests/{request_id}/sign")
    officer.check("input[name=confirm]")
    officer.fill("#pin", "999999-wrong")
    officer.click("#sign-form button[type=submit]")
    officer.wait_for_url(re.compile(rf"/web/requests/{request_id}/sign$"))
    failure = officer.locator("#failure").inner_text()
    assert ("PIN 码不正确" if language == "zh_CN" else "The PIN is incorrect. Check it and try again") in failure
    assert officer.locator("#live-state").inner_text() == ("签名失败" if language == "zh_CN" else "Signing failed")
    assert "pin_incorrect" in failure
    assert officer.locator("#pin").input_value() == ""
    screens.shot(officer, "wrong-pin")

    signed = sign_as_officer(officer, base, request_id, agent.state_dir, screens)
    assert signed.startswith(b"%PDF")
    officer_context.close()


def _approved_request(browser: object, base: str, tmp_path: Path, language: str) -> str:
    """Create a request as the operator and approve it as the reviewer; return its id."""
    context = phone(browser, language)
    page = context.new_page()
    sign_in(page, base, "operator-zhao")
    request_id = create_request(page, base, a4_pdf(tmp_path / f"request-{language}.pdf", "Request"),
                                "officer-signature")
    context.clear_cookies()
    reviewer = context.new_page()
    sign_in(reviewer, base, "reviewer-wang")
    reviewer.goto(f"{base}/web/requests/{request_id}")
    reviewer.click("#review-form button[value=approve]")
    reviewer.wait_for_url(re.compile(rf"/web/requests/{request_id}$"))
    context.close()
    return request_id


@pytest.mark.parametrize("language", LANGUAGES)
def test_pages_readable_without_javascript(agent: AgentProcess, browser: object, tmp_path: Path,
                                           language: str) -> None:
    base = agent.base_url
    signed = {"zh_CN": "已完成：已签名", "en": "Done: signed"}[language]
    request_id = _approved_request(browser, base, tmp_path, language)
    context = browser.new_context(viewport=PHONE, locale=LOCALES[language], java_script_enabled=False)
    page = context.new_page()
    sign_in(page, base, "officer-li")
    page.goto(f"{base}/web/inbox")
    page.click(f"a[href='/web/requests/{request_id}']")
    page.click(f"a[href='/web/requests/{request_id}/sign']")
    page.check("input[name=confirm]")
    page.fill("#pin", (agent.state_dir / "secrets" / "officer.pin").read_text().strip())
    page.click("#sign-form button[type=submit]")
    page.wait_for_url(re.compile(rf"/web/requests/{request_id}/sign$"))
    for _ in range(20):
        if page.locator("#live-state").inner_text() == signed:
            break
        page.wait_for_timeout(500)
        page.reload()

    assert page.locator("#live-state").inner_text() == signed
    assert page.locator("#download").is_visible()
    Screens(f"no-javascript-{language}").shot(page, "signed")
    context.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_keyboard_sign_in_on_desktop(agent: AgentProcess, browser: object, language: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale=LOCALES[language])
    page = context.new_page()
    page.goto(f"{agent.base_url}/web/login")

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    focused = []
    for _ in range(6):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
    assert focused.index("username") < focused.index("password")
    page.focus("#username")
    page.keyboard.type("reviewer-wang")
    page.keyboard.press("Tab")
    page.keyboard.type(password("reviewer-wang"))
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/web/$"))
    page.goto(f"{agent.base_url}/web/review")

    heading = {"zh_CN": "等待我审核", "en": "Waiting for my review"}[language]
    assert page.locator("h1").inner_text() == heading
    Screens(f"desktop-{language}").shot(page, "review-queue")
    context.close()


def test_every_page_in_both_languages(agent: AgentProcess, browser: object, tmp_path: Path) -> None:
    """Visit one page of every page template in each language, save its screenshot and check none is missing."""
    base = agent.base_url
    pages = {name for name in os.listdir(TEMPLATES) if name.endswith(".html")} - PARTIAL_TEMPLATES
    request_id = _approved_request(browser, base, tmp_path, "zh_CN")
    visits = [
        (None, "/web/login"), (None, "/web/pair?code=0000-0000"),
        ("admin-sun", "/web/"), ("admin-sun", "/web/requests"), ("admin-sun", "/web/requests/new"),
        ("admin-sun", "/web/admin/users"), ("admin-sun", "/web/admin/templates"),
        ("admin-sun", "/web/admin/templates/new"), ("admin-sun", "/web/admin/pairing"),
        ("admin-sun", "/web/admin/devices"), ("admin-sun", "/web/admin/tokens"), ("admin-sun", "/web/audit"),
        ("admin-sun", "/web/admin/backup"), ("admin-sun", "/web/no-such-page"),
        ("officer-li", "/web/inbox"), ("officer-li", f"/web/requests/{request_id}"),
        ("officer-li", f"/web/requests/{request_id}/sign"),
    ]

    for language in LANGUAGES:
        screens = Screens(f"pages-{language}")
        contexts = {user: phone(browser, language) for user in (None, "admin-sun", "officer-li")}
        tabs = {user: context.new_page() for user, context in contexts.items()}
        for user, tab in tabs.items():
            if user is not None:
                sign_in(tab, base, user)
        shown = set()
        for user, path in visits:
            tab = tabs[user]
            tab.goto(f"{base}{path}")
            assert tab.get_attribute("html", "lang") == ("zh-CN" if language == "zh_CN" else "en")
            shown.add(screens.shot(tab, path.strip("/").split("?")[0].replace("/", "-") or "home"))
        for context in contexts.values():
            context.close()

        assert pages - shown == set(), f"page templates without a {language} screenshot"
        assert shown - pages == set(), f"{language} screenshots of templates that are not pages"
