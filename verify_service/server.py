"""The verification HTTP service (aiohttp): upload a PDF or a CMS signature, get the JSON report.

Endpoints:

- ``POST /api/v1/verify``: either ``multipart/form-data`` with a ``file`` part and, for a detached CMS
  signature, a ``content`` part; or the raw file as the body with ``Content-Type: application/pdf`` (or
  ``application/pkcs7-signature``, ``application/octet-stream``). Returns the report that
  ``qsign verify FILE --json`` prints, with status 200 whatever the verdict.
  The report is filed; ``GET /api/v1/reports/{id}`` returns it again and ``…/report.html`` shows it.
- ``GET /api/v1/requests/{id}``: what the archive holds about a signature request a report links to.
- ``GET /`` (upload form), ``POST /verify`` (the form's upload, answers with a redirect to the report
  page), ``GET|POST /login``, ``POST /logout``: the web pages, in zh-CN and English (``?lang=``).
- ``GET /healthz``: ``{"status": "ok"}``.

Once an auditor account exists (or with ``require_login = true``), every endpoint but ``/healthz``,
``/login`` and ``/static`` needs a logged-in session or ``Authorization: Bearer <API token>``. Every
verification is recorded in the archive's audit log with who asked.

Errors are ``{"code", "message", "request_id"}`` with the message in the language of ``Accept-Language``
(zh-CN or en). Each validation runs in its own process (``verify_service.sandbox``), waited for from a
worker thread, so the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import secrets
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import BodyPartReader, web

from qsign import __version__
from qsign.errors import QsignError
from qsign.i18n import N_, negotiate_language, normalize_language
from verify_service.accounts import AccountStore
from verify_service.errors import (
    CsrfFailed,
    ListenFailed,
    LoginFailed,
    LoginRequired,
    ReportNotFound,
    UploadInvalid,
    UploadTooLarge,
)
from verify_service.pages import CONTENT_SECURITY_POLICY, STATIC_DIR, render
from verify_service.sandbox import Limits, verify_isolated
from verify_service.settings import ServiceSettings, parse_listen
from verify_service.store import ReportStore

__all__ = ["create_app", "serve", "start_server"]

_logger = logging.getLogger(__name__)

_SETTINGS = web.AppKey("settings", ServiceSettings)
#: Id of the request being handled, for log lines and error bodies. A context variable gives each
#: request task its own value.
_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
_SERVICES = web.AppKey("services", object)

_SESSION_COOKIE = "qsign_verify_session"
_CSRF_COOKIE = "qsign_verify_csrf"
#: Seconds a web session lasts after login.
_SESSION_SECONDS = 8 * 3600
_ANONYMOUS = "anonymous"

#: Content types accepted as a raw request body, and the file name used when the request names none.
_RAW_TYPES = {
    "application/pdf": "upload.pdf",
    "application/pkcs7-signature": "upload.p7s",
    "application/pkcs7-mime": "upload.p7m",
    "application/cms": "upload.p7s",
    "application/octet-stream": "upload.bin",
}
_FORM_FIELDS = ("file", "content")
_TEXT_FIELDS = ("csrf",)
_CHUNK_SIZE = 256 * 1024
_MAX_NAME_LENGTH = 255


class UnsupportedMediaType(QsignError):
    code = "unsupported_media_type"
    message_template = N_("Content-Type {content_type} is not supported: send multipart/form-data with a "
                          "\"file\" part, or the file itself as application/pdf.")
    http_status = 415
    exit_code = 2


class RouteNotFound(QsignError):
    code = "not_found"
    message_template = N_("No such endpoint: {method} {path}.")
    http_status = 404
    exit_code = 2


class MethodNotAllowed(QsignError):
    code = "method_not_allowed"
    message_template = N_("Method {method} is not allowed on {path}.")
    http_status = 405
    exit_code = 2


def _error_response(request: web.Request, error: QsignError) -> web.Response:
    language = negotiate_language(request.headers.get("Accept-Language"))
    request_id = _REQUEST_ID.get()
    body = {"code": error.code, "message": error.message(language), "request_id": request_id}
    return web.json_response(body, status=error.http_status, dumps=_dumps, headers={"X-Request-Id": request_id})


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


@web.middleware
async def _request_middleware(request: web.Request,
                              handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                              ) -> web.StreamResponse:
    """Give each request an id, and turn every error into the JSON error body."""
    request_id = uuid.uuid4().hex
    _REQUEST_ID.set(request_id)
    try:
        response = await handler(request)
    except QsignError as error:
        _logger.info("request %s %s %s failed: %s", request_id, request.method, request.path, error.code)
        return _error_response(request, error)
    except web.HTTPNotFound:
        return _error_response(request, RouteNotFound(method=request.method, path=request.path))
    except web.HTTPMethodNotAllowed:
        return _error_response(request, MethodNotAllowed(method=request.method, path=request.path))
    except web.HTTPRequestEntityTooLarge:
        limit_mb = f"{request.app[_SETTINGS].max_upload_mb:g}"
        return _error_response(request, UploadTooLarge(limit_mb=limit_mb))
    except web.HTTPException:
        raise
    except Exception:
        _logger.exception("request %s %s %s failed", request_id, request.method, request.path)
        return _error_response(request, QsignError())
    response.headers["X-Request-Id"] = request_id
    return response


def _safe_name(raw: str | None, default: str) -> str:
    """Return the last part of an uploaded file name, so that no path reaches the report.

    Percent-escapes are decoded first: aiohttp and some other clients percent-encode the multipart
    ``filename`` parameter instead of sending UTF-8.
    """
    if not raw:
        return default
    name = PureWindowsPath(PurePosixPath(unquote(raw)).name).name.strip()
    return name[:_MAX_NAME_LENGTH] or default


class _UploadBudget:
    """Counts the bytes of one request against the upload limit."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.remaining = settings.max_upload_bytes

    def take(self, size: int) -> None:
        self.remaining -= size
        if self.remaining < 0:
            raise UploadTooLarge(limit_mb=f"{self.settings.max_upload_mb:g}")


async def _save_stream(read_chunk: Callable[[], Awaitable[bytes]], target: Path, budget: _UploadBudget) -> None:
    # NOTE: writes happen on the event loop thread; they are buffered local-disk writes of 256 KiB.
    with target.open("wb") as handle:
        while chunk := await read_chunk():
            budget.take(len(chunk))
            handle.write(chunk)


async def _save_multipart(request: web.Request, directory: Path, budget: _UploadBudget,
                          texts: dict[str, str] | None = None) -> dict[str, tuple[Path, str]]:
    """Save the file parts under ``directory``; put the text parts (the web form's ``csrf``) in ``texts``."""
    saved: dict[str, tuple[Path, str]] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise UploadInvalid(detail="nested multipart bodies are not supported")
        if texts is not None and part.name in _TEXT_FIELDS:
            value = await part.read_chunk(1024)
            budget.take(len(value))
            texts[part.name] = value.decode("utf-8", errors="replace")
            continue
        if part.name == "content" and not part.filename and texts is not None:
            # An empty optional file input of the web form.
            await part.release()
            continue
        if part.name not in _FORM_FIELDS:
            raise UploadInvalid(detail=f"unknown form field {part.name!r} (expected \"file\" and \"content\")")
        if part.name in saved:
            raise UploadInvalid(detail=f"form field {part.name!r} given twice")

        target = directory / part.name
        await _save_stream(lambda: part.read_chunk(_CHUNK_SIZE), target, budget)
        saved[part.name] = (target, _safe_name(part.filename, part.name))

    if "file" not in saved:
        raise UploadInvalid(detail="missing form field \"file\"")
    return saved


@dataclass
class _Session:
    user: str
    csrf: str
    expires: float


class _Services:
    """State shared by the handlers: filed reports, accounts, web sessions and the archive."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        state_dir = settings.state_dir
        self.reports = ReportStore(state_dir) if state_dir is not None else None
        self.accounts = AccountStore(state_dir) if state_dir is not None else None
        self.sessions: dict[str, _Session] = {}
        self._archive: Any = None
        self._archive_lock = threading.Lock()

    def login_required(self) -> bool:
        return self.settings.require_login or (self.accounts is not None and self.accounts.has_accounts())

    def archive(self) -> Any:
        """Return the state dir's archive, opened once without its key; ``None`` when it cannot open."""
        if self.settings.state_dir is None:
            return None
        with self._archive_lock:
            if self._archive is None:
                from archive.api import Archive

                try:
                    self._archive = Archive.open(self.settings.state_dir, with_key=False)
                except Exception:
                    _logger.exception("cannot open the archive of %s; verifications are not audited",
                                      self.settings.state_dir)
                    self._archive = False
            return self._archive or None

    def lookup(self, sha256: str) -> dict[str, Any] | None:
        """Return the archive records of a file qsign signed, or ``None`` when the archive has no such file."""
        archive = self.archive()
        if archive is None:
            return None
        found = archive.find(sha256=sha256)
        if found["document"] is None and not found["requests"]:
            return None
        requests = [{"id": row["id"], "state": row.get("state"), "signed_sha256": row.get("signed_sha256")}
                    for row in found["requests"]]
        document = found["document"] or {}
        return {"signed_by_qsign": True, "kind": document.get("kind"), "stored_at": document.get("stored_at"),
                "requests": requests, "job_items": len(found["job_items"])}

    def audit(self, actor: str, action: str, outcome: str, *, object_ids: dict[str, Any],
              document_hashes: list[str]) -> None:
        archive = self.archive()
        if archive is None:
            _logger.warning("audit entry %s by %s not recorded: no archive", action, actor)
            return
        present = {key: value for key, value in object_ids.items() if value is not None}
        archive.audit(actor, action, outcome, object_ids=present, document_hashes=document_hashes)

    def close(self) -> None:
        if self._archive:
            self._archive.close()


def _language(request: web.Request) -> str:
    return normalize_language(request.query.get("lang")) or negotiate_language(request.headers.get("Accept-Language"))


def _session(request: web.Request) -> _Session | None:
    services: _Services = request.app[_SERVICES]
    token = request.cookies.get(_SESSION_COOKIE)
    session = services.sessions.get(token) if token else None
    if session is not None and session.expires < time.time():
        services.sessions.pop(token, None)
        return None
    return session


async def _identify(request: web.Request) -> str | None:
    """Return the auditor behind a request (API token or web session), or ``None``."""
    services: _Services = request.app[_SERVICES]
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer ") and services.accounts is not None:
        account = await asyncio.to_thread(services.accounts.check_token, authorization[7:].strip())
        if account is None:
            raise LoginRequired()
        return account.name
    session = _session(request)
    return session.user if session is not None else None


async def _require_user(request: web.Request) -> str:
    """Return the requesting user; raise ``LoginRequired`` when login is required and no user is logged in."""
    user = await _identify(request)
    if user is not None:
        return user
    if request.app[_SERVICES].login_required():
        raise LoginRequired()
    return _ANONYMOUS


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _csrf_token(request: web.Request, response_cookies: dict[str, str]) -> str:
    """Return the CSRF token of the session, or of the double-submit cookie (made when missing)."""
    session = _session(request)
    if session is not None:
        return session.csrf
    token = request.cookies.get(_CSRF_COOKIE)
    if not token:
        token = secrets.token_urlsafe(24)
        response_cookies[_CSRF_COOKIE] = token
    return token


def _check_csrf(request: web.Request, submitted: str | None) -> None:
    session = _session(request)
    expected = session.csrf if session is not None else request.cookies.get(_CSRF_COOKIE)
    if not expected or not submitted or not secrets.compare_digest(expected, submitted):
        raise CsrfFailed()


def _set_cookies(response: web.StreamResponse, cookies: dict[str, str]) -> None:
    for name, value in cookies.items():
        response.set_cookie(name, value, httponly=True, samesite="Strict", path="/")


async def _verify_upload(request: web.Request, actor: str, saved: dict[str, tuple[Path, str]]) -> dict[str, Any]:
    """Validate a saved upload in a child process, add the archive lookup, file the report, audit it."""
    settings = request.app[_SETTINGS]
    services: _Services = request.app[_SERVICES]
    file_path, file_name = saved["file"]
    content_path, content_name = saved.get("content", (None, None))
    _logger.info("request %s: %s verifies upload %s", _REQUEST_ID.get(), actor, file_name)
    limits = Limits(timeout_seconds=settings.timeout_seconds, memory_mb=settings.memory_mb)
    loop = asyncio.get_running_loop()
    try:
        report = await loop.run_in_executor(
            request.app[_EXECUTOR],
            lambda: verify_isolated(file_path, content_path, settings.trust, name=file_name,
                                    content_name=content_name, policy=settings.policy, limits=limits),
        )
    except QsignError as error:
        await asyncio.to_thread(services.audit, actor, "verify.rejected", "failure",
                                object_ids={"file": file_name, "code": error.code,
                                            "request_id": _REQUEST_ID.get()}, document_hashes=[])
        raise

    report.requested_by = actor
    report.archive = await asyncio.to_thread(services.lookup, report.file.sha256)
    body = report.to_dict()
    if services.reports is not None:
        await asyncio.to_thread(services.reports.save, body)
    await asyncio.to_thread(services.audit, actor, "verify.report", "success",
                            object_ids={"report_id": report.id, "file": file_name, "verdict": body["verdict"],
                                        "sub_indication": body["sub_indication"]},
                            document_hashes=[report.file.sha256])
    return body


async def _handle_verify(request: web.Request) -> web.Response:
    actor = await _require_user(request)
    settings = request.app[_SETTINGS]
    budget = _UploadBudget(settings)
    if request.content_length is not None and request.content_length > settings.max_upload_bytes:
        raise UploadTooLarge(limit_mb=f"{settings.max_upload_mb:g}")

    with tempfile.TemporaryDirectory(prefix="qsign-verify-") as temporary:
        directory = Path(temporary)
        content_type = request.content_type
        if content_type == "multipart/form-data":
            saved = await _save_multipart(request, directory, budget)
        elif content_type in _RAW_TYPES:
            target = directory / "file"
            await _save_stream(lambda: request.content.read(_CHUNK_SIZE), target, budget)
            name = _safe_name(request.query.get("name"), _RAW_TYPES[content_type])
            saved = {"file": (target, name)}
        else:
            raise UnsupportedMediaType(content_type=content_type)
        body = await _verify_upload(request, actor, saved)
    return web.json_response(body, dumps=_dumps, headers={"Location": f"/api/v1/reports/{body['id']}"})


def _load_report(request: web.Request) -> dict[str, Any]:
    services: _Services = request.app[_SERVICES]
    report_id = request.match_info["report_id"]
    if services.reports is None:
        raise ReportNotFound(ids={"report_id": report_id}, report_id=report_id)
    return services.reports.load(report_id)


async def _handle_report(request: web.Request) -> web.Response:
    await _require_user(request)
    return web.json_response(await asyncio.to_thread(_load_report, request), dumps=_dumps)


def _login_redirect(request: web.Request) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/login?lang={_language(request)}&next={quote(request.path_qs, safe='')}")


async def _page_user(request: web.Request) -> str:
    """Return who views a page; redirect to the login page when login is required."""
    try:
        return await _require_user(request)
    except LoginRequired:
        raise _login_redirect(request) from None


async def _handle_report_html(request: web.Request) -> web.Response:
    user = await _page_user(request)
    report = await asyncio.to_thread(_load_report, request)
    cookies: dict[str, str] = {}
    page = render("report.html", _language(request), report=report, user=_shown_user(user),
                  csrf=_csrf_token(request, cookies))
    response = _html(page)
    _set_cookies(response, cookies)
    return response


async def _no_content() -> web.Response:
    return web.Response(status=204)


def _shown_user(user: str) -> str | None:
    return None if user == _ANONYMOUS else user


async def _handle_index(request: web.Request) -> web.Response:
    user = await _page_user(request)
    cookies: dict[str, str] = {}
    response = _html(render("index.html", _language(request), user=_shown_user(user),
                            csrf=_csrf_token(request, cookies)))
    _set_cookies(response, cookies)
    return response


async def _handle_web_verify(request: web.Request) -> web.StreamResponse:
    user = await _page_user(request)
    settings = request.app[_SETTINGS]
    language = _language(request)
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(content_type=request.content_type)
    texts: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="qsign-verify-") as temporary:
            saved = await _save_multipart(request, Path(temporary), _UploadBudget(settings), texts)
            _check_csrf(request, texts.get("csrf"))
            body = await _verify_upload(request, user, saved)
    except QsignError as error:
        cookies: dict[str, str] = {}
        page = render("index.html", language, user=_shown_user(user), csrf=_csrf_token(request, cookies),
                      error=f"{error.message(language)} [{error.code}]")
        response = _html(page, status=error.http_status)
        _set_cookies(response, cookies)
        return response
    raise web.HTTPSeeOther(f"/api/v1/reports/{body['id']}/report.html?lang={language}")


async def _handle_login_page(request: web.Request) -> web.Response:
    cookies: dict[str, str] = {}
    response = _html(render("login.html", _language(request), csrf=_csrf_token(request, cookies)))
    _set_cookies(response, cookies)
    return response


async def _handle_login(request: web.Request) -> web.StreamResponse:
    services: _Services = request.app[_SERVICES]
    language = _language(request)
    form = await request.post()
    name, password = str(form.get("user", "")), str(form.get("password", ""))
    try:
        if services.accounts is None:
            raise LoginFailed()
        _check_csrf(request, str(form.get("csrf", "")))
        account = await asyncio.to_thread(services.accounts.check_password, name, password)
    except QsignError as error:
        _logger.info("request %s: login of %r failed: %s", _REQUEST_ID.get(), name, error.code)
        await asyncio.to_thread(services.audit, name or "-", "verify.login", "denied",
                                object_ids={"code": error.code}, document_hashes=[])
        page = render("login.html", language, csrf=request.cookies.get(_CSRF_COOKIE, ""),
                      error=error.message(language))
        return _html(page, status=error.http_status)

    token = secrets.token_urlsafe(32)
    services.sessions[token] = _Session(user=account.name, csrf=secrets.token_urlsafe(24),
                                        expires=time.time() + _SESSION_SECONDS)
    await asyncio.to_thread(services.audit, account.name, "verify.login", "success", object_ids={},
                            document_hashes=[])
    target = request.query.get("next", "/")
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    response = web.HTTPSeeOther(target)
    _set_cookies(response, {_SESSION_COOKIE: token})
    raise response


async def _handle_logout(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    _check_csrf(request, str(form.get("csrf", "")))
    token = request.cookies.get(_SESSION_COOKIE)
    if token:
        request.app[_SERVICES].sessions.pop(token, None)
    response = web.HTTPSeeOther(f"/login?lang={_language(request)}")
    response.del_cookie(_SESSION_COOKIE, path="/")
    raise response


async def _handle_request_lookup(request: web.Request) -> web.Response:
    await _require_user(request)
    services: _Services = request.app[_SERVICES]
    archive = await asyncio.to_thread(services.archive)
    if archive is None:
        raise RouteNotFound(method=request.method, path=request.path)
    found = await asyncio.to_thread(archive.find, request_id=request.match_info["request_id"])
    return web.json_response(found, dumps=lambda value: json.dumps(value, ensure_ascii=False, default=str))


@web.middleware
async def _security_headers(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exception:
        response = exception
        _add_security_headers(response)
        raise
    _add_security_headers(response)
    return response


def _add_security_headers(response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"


async def _handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "qsign_version": __version__})


def create_app(settings: ServiceSettings) -> web.Application:
    """Build the aiohttp application; the caller runs it (``start_server`` does)."""
    # aiohttp's own limit applies only to request.read()/post(); the handlers count streamed bytes too.
    app = web.Application(middlewares=[_security_headers, _request_middleware],
                          client_max_size=settings.max_upload_bytes)
    app[_SETTINGS] = settings
    app[_EXECUTOR] = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="qsign-verify")
    app[_SERVICES] = services = _Services(settings)
    if not services.login_required():
        _logger.warning("no auditor account exists and require_login is false: the service accepts "
                        "requests without login; create one with 'qsign verify users add NAME'")

    async def _shutdown(app: web.Application) -> None:
        app[_EXECUTOR].shutdown(wait=True, cancel_futures=True)
        services.close()

    app.on_cleanup.append(_shutdown)
    app.router.add_post("/api/v1/verify", _handle_verify)
    app.router.add_get("/api/v1/reports/{report_id}", _handle_report)
    app.router.add_get("/api/v1/reports/{report_id}/report.html", _handle_report_html)
    app.router.add_get("/api/v1/requests/{request_id}", _handle_request_lookup)
    app.router.add_get("/", _handle_index)
    app.router.add_post("/verify", _handle_web_verify)
    app.router.add_get("/login", _handle_login_page)
    app.router.add_post("/login", _handle_login)
    app.router.add_post("/logout", _handle_logout)
    app.router.add_static("/static", STATIC_DIR)
    # Browsers request it on their own; a 204 response keeps their consoles free of 404 errors.
    app.router.add_get("/favicon.ico", lambda request: _no_content())
    app.router.add_get("/healthz", _handle_healthz)
    return app


def _base_url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def start_server(settings: ServiceSettings, host: str = "127.0.0.1",
                       port: int = 0) -> tuple[web.AppRunner, str]:
    """Start the service on ``host:port`` in the running event loop; return the runner and the base URL.

    Port 0 binds a free port, and the URL carries the real one. Stop the service with
    ``await runner.cleanup()``.
    """
    runner = web.AppRunner(create_app(settings), access_log=_logger if _logger.isEnabledFor(logging.DEBUG)
                           else None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    base_url = _base_url(runner)
    _logger.info("verification service listening on %s", base_url)
    return runner, base_url


async def _serve_until_signal(settings: ServiceSettings, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)

    runner, base_url = await start_server(settings, host, port)
    try:
        print(base_url, flush=True)
        await stop.wait()
        _logger.info("verification service on %s stopping", base_url)
    finally:
        await runner.cleanup()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signal_number)
    _logger.info("verification service stopped")


def serve(settings: ServiceSettings, listen: str | None = None) -> int:
    """Run the service until SIGTERM or SIGINT; the first line on stdout is its base URL."""
    host, port = parse_listen(listen or settings.listen)
    try:
        asyncio.run(_serve_until_signal(settings, host, port))
    except OSError as exc:
        _logger.error("cannot listen on %s:%s: %s", host, port, exc)
        raise ListenFailed(ids={"address": f"{host}:{port}"}, address=f"{host}:{port}",
                           reason=exc.strerror or str(exc)) from exc
    return 0
