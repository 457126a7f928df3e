"""The web pages as an aiohttp sub-application under ``/web``: middleware, sessions, CSRF, CSP, templates.

``setup_web(app, workflow, settings)`` mounts the pages on the agent's application and redirects ``/``
to them. Pages are rendered on the server with Jinja2 (aiohttp-jinja2). The only script is
``static/app.js`` (live state and seal placement), because the Content-Security-Policy forbids inline
scripts and styles. Every POST must carry the CSRF token of the session (see ``agent.web.auth``).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web

from agent.errors import DeviceRevoked, MethodNotAllowed, NotFound, Unauthorized
from agent.settings import AgentSettings
from agent.web.auth import PasswordStore, WebSecret, session_device
from agent.web.errors import CsrfInvalid, RoleRequired, SessionExpired
from agent.web.labels import role_label, state_label
from agent.web.sample_page import SamplePages
from agent.web.sign_in_limit import SignInLimiter
from agent.workflow import Caller, Workflow
from policies import Role
from qsign.errors import QsignError
from qsign.i18n import SUPPORTED_LANGUAGES, gettext_for, negotiate_language, normalize_language

__all__ = ["setup_web", "WebServices", "WEB", "WEB_PREFIX", "SESSION_COOKIE", "CSP"]

_logger = logging.getLogger(__name__)

WEB_PREFIX = "/web"
SESSION_COOKIE = "qsign_session"
ANON_COOKIE = "qsign_anon"
LANGUAGE_COOKIE = "qsign_lang"
HERE = Path(__file__).parent

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass
class WebServices:
    """Services shared by the page handlers: the workflow, the settings and the sign-in stores."""

    workflow: Workflow
    settings: AgentSettings
    passwords: PasswordStore
    secret: WebSecret
    default_language: str
    #: The last signing error of a request, kept to show its full message on the sign page.
    sign_errors: dict[str, QsignError] = field(default_factory=dict)
    #: Signatures started from the web pages, kept referenced until they end.
    tasks: set[Any] = field(default_factory=set)
    #: Failed password sign-ins per user name and per client address.
    sign_in_limiter: SignInLimiter = field(default_factory=SignInLimiter)
    #: First pages of sample documents uploaded in the template editor.
    sample_pages: SamplePages = field(default_factory=SamplePages)


WEB = web.AppKey("qsign_web", WebServices)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def services(request: web.Request) -> WebServices:
    return request.config_dict[WEB]


def _language(request: web.Request, default: str) -> str:
    chosen = normalize_language(request.cookies.get(LANGUAGE_COOKIE))
    if chosen in SUPPORTED_LANGUAGES:
        return chosen
    return negotiate_language(request.headers.get("Accept-Language"), default)


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
               max_age: int | None = None) -> None:
    """Set a cookie HttpOnly and SameSite=Lax, and Secure whenever the agent serves TLS."""
    response.set_cookie(name, value, path="/", max_age=max_age, httponly=True, samesite="Lax",
                        secure=services(request).settings.use_tls)


def csrf_binding(request: web.Request) -> str:
    return request.cookies.get(SESSION_COOKIE) or request.get("anon_cookie", "")


def csrf_token(request: web.Request) -> str:
    return services(request).secret.csrf_token(csrf_binding(request))


def caller(request: web.Request) -> Caller:
    """Return the signed-in caller; raise ``unauthorized`` (handled as a redirect to sign-in) when there is none."""
    current = request.get("caller")
    if current is None:
        raise Unauthorized()
    return current


def require_role(request: web.Request, *roles: Role) -> Caller:
    current = caller(request)
    if not any(current.user.has(role) for role in roles):
        gettext = request["gettext"]
        raise RoleRequired(role=" / ".join(role_label(role.value, gettext) for role in roles))
    return current


def redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def _signed_out_redirect(request: web.Request, reason: str) -> web.Response:
    target = f"{WEB_PREFIX}/login?reason={reason}"
    if request.method == "GET" and not request.path.startswith(f"{WEB_PREFIX}/login"):
        target += "&next=" + quote(request.path_qs, safe="")
    response = web.HTTPSeeOther(target)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def _load_session(request: web.Request) -> str | None:
    """Put the signed-in caller on the request; return why the session ended, or ``None``."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    workflow = services(request).workflow
    try:
        device = session_device(workflow.archive, cookie)
        request["caller"] = workflow.caller(device)
    except DeviceRevoked:
        return "revoked"
    except SessionExpired:
        return "expired"
    except (Unauthorized, QsignError):
        return "signed_out"
    return None


_PUBLIC_PATHS = ("/login", "/pair", "/lang/", "/static/")


@web.middleware
async def web_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    web_services = services(request)
    language = _language(request, web_services.default_language)
    request["language"] = language
    request["gettext"] = gettext_for(language)
    anon = request.cookies.get(ANON_COOKIE)
    request["anon_cookie"] = anon or secrets.token_urlsafe(24)

    try:
        ended = await _load_session(request)
        relative = request.path[len(WEB_PREFIX):] or "/"
        public = any(relative.startswith(prefix) for prefix in _PUBLIC_PATHS)
        if ended is not None and not public:
            return _signed_out_redirect(request, ended)
        if request.get("caller") is None and not public:
            return _signed_out_redirect(request, "required")

        if request.method == "POST":
            form = await request.post()
            token = str(form.get("csrf", ""))
            if not web_services.secret.check_csrf(csrf_binding(request), token):
                _logger.info("CSRF token rejected for %s %s", request.method, request.path)
                raise CsrfInvalid()
        response = await handler(request)
    except web.HTTPException as http:
        response = http
        if http.status < 400:
            _add_headers(request, response, anon)
            raise
        if http.status == 404:
            error: QsignError = NotFound(path=request.path[:200])
        elif http.status == 405:
            error = MethodNotAllowed(method=request.method, path=request.path[:200])
        else:
            error = QsignError()
        response = _render_error(request, error, status=http.status)
    except Unauthorized:
        return _signed_out_redirect(request, "required")
    except QsignError as error:
        if error.http_status >= 500:
            _logger.warning("%s %s failed: %s %s", request.method, request.path, error.code, error.ids)
        response = _render_error(request, error)
    except Exception:  # an unexpected error still gets a page in the user's language, and a log line
        _logger.exception("web page %s %s failed", request.method, request.path)
        response = _render_error(request, QsignError())

    _add_headers(request, response, anon)
    return response


def _add_headers(request: web.Request, response: web.StreamResponse, anon: str | None) -> None:
    if response.prepared:
        return
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    if anon is None:
        set_cookie(request, response, ANON_COOKIE, request["anon_cookie"])


def _render_error(request: web.Request, error: QsignError, status: int | None = None) -> web.Response:
    language = request["language"]
    # The context processor has not run when the middleware itself raised, so the context is built here.
    response = aiohttp_jinja2.render_template("error.html", request, {
        **_context(request), "error": error, "message": error.message(language), "code": error.code})
    response.set_status(status or error.http_status)
    return response


def _context(request: web.Request) -> dict[str, Any]:
    gettext = request["gettext"]
    current = request.get("caller")
    roles = {role.value for role in current.user.roles} if current else set()
    return {
        "_": gettext,
        "language": request["language"],
        "html_language": "zh-CN" if request["language"] == "zh_CN" else "en",
        "csrf": csrf_token(request),
        "caller": current,
        "roles": roles,
        "path_qs": request.path_qs,
        "state_label": lambda state: state_label(state, gettext),
        "role_label": lambda role: role_label(role, gettext),
        "prefix": WEB_PREFIX,
    }


@jinja2.pass_context
def _page_template(context: jinja2.runtime.Context) -> str:
    """Return the name of the page's own template (not of ``base.html``, which it extends)."""
    return context.name or ""


async def _context_processor(request: web.Request) -> dict[str, Any]:
    return _context(request)


async def _root_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(f"{WEB_PREFIX}/")


def build_web_app(workflow: Workflow, settings: AgentSettings, default_language: str | None = None) -> web.Application:
    """Build the ``/web`` sub-application; ``default_language`` defaults to ``[general] language``."""
    from agent.web import views_admin, views_requests, views_session

    web_dir = settings.agent_dir
    web_services = WebServices(
        workflow=workflow, settings=settings,
        passwords=PasswordStore(web_dir / "web-passwords.json"),
        secret=WebSecret(web_dir / "web-secret"),
        default_language=normalize_language(default_language or workflow.config.language) or "zh_CN",
    )
    subapp = web.Application(middlewares=[web_middleware])
    subapp[WEB] = web_services
    environment = aiohttp_jinja2.setup(subapp, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                       context_processors=[_context_processor])
    environment.globals["page_template"] = _page_template
    subapp.router.add_static("/static/", HERE / "static", name="static")
    views_session.register(subapp.router)
    views_requests.register(subapp.router)
    views_admin.register(subapp.router)
    return subapp


def setup_web(app: web.Application, workflow: Workflow, settings: AgentSettings) -> None:
    """Mount the web pages on the agent's application under ``/web`` and redirect ``/`` there."""
    app.add_subapp(WEB_PREFIX, build_web_app(workflow, settings))
    app.router.add_get("/", _root_redirect)
