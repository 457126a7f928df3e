"""Sign-in, sign-out, pairing a phone from the QR code, the language switch and the home page."""

from __future__ import annotations

import datetime
import logging
import math
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from agent.errors import AgentError
from agent.pairing import redeem_pairing_code, revoke_device
from agent.web.app import (LANGUAGE_COOKIE, SESSION_COOKIE, WEB_PREFIX, caller, redirect, services, set_cookie)
from agent.web.auth import SESSION_LIFETIME, create_login_session
from agent.web.errors import SignInFailed, SignInRateLimited
from policies import Role
from qsign.errors import QsignError
from qsign.i18n import SUPPORTED_LANGUAGES, N_

__all__ = ["register"]

_logger = logging.getLogger(__name__)

_SIGNED_OUT_REASONS = {
    "revoked": N_("This device has been revoked, so you were signed out. Sign in again or pair the phone again."),
    "expired": N_("Your session has expired. Sign in again."),
    "signed_out": N_("You were signed out. Sign in again."),
    "required": N_("Sign in to continue."),
}


def _local_target(value: str | None) -> str:
    """Return ``value`` when it is a path of these pages (no other site), else the home page."""
    if value and value.startswith(WEB_PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return WEB_PREFIX + "/"


async def login_page(request: web.Request) -> web.Response:
    reason = request.query.get("reason", "")
    gettext = request["gettext"]
    notice = gettext(_SIGNED_OUT_REASONS[reason]) if reason in _SIGNED_OUT_REASONS else None
    return aiohttp_jinja2.render_template("login.html", request, {
        "notice": notice, "revoked": reason == "revoked", "next": _local_target(request.query.get("next")),
        "error": None, "username": ""})


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    username = str(form.get("username", "")).strip()[:100]
    password = str(form.get("password", ""))
    web_services = services(request)
    workflow = web_services.workflow

    address = request.remote or "?"
    limiter = web_services.sign_in_limiter

    # A limited sign-in is rejected before the password is checked, so guessing gains nothing.
    retry_at = limiter.retry_at(username, address)
    if retry_at is not None:
        workflow.archive.audit(f"user:{username or '?'}", "web.sign_in_rate_limited", "failure",
                               object_ids={"address": address}, reason="sign_in_rate_limited")
        _logger.warning("web sign-in rejected for user %r from %s until %s: too many failures",
                        username, address, retry_at.isoformat())
        seconds = (retry_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        error = SignInRateLimited(ids={"user": username}, minutes=max(1, math.ceil(seconds / 60)),
                                  time=retry_at.strftime("%H:%M:%S"))
        response = _login_form_with_error(request, form, username, error)
        response.headers["Retry-After"] = str(max(1, math.ceil(seconds)))
        return response

    known = username in workflow.policy.users
    if not (web_services.passwords.verify(username, password) and known):
        limiter.record_failure(username, address)
        workflow.archive.audit(f"user:{username or '?'}", "web.sign_in_failed", "failure",
                               object_ids={"address": address}, reason="sign_in_failed")
        _logger.info("web sign-in failed for user %r from %s", username, address)
        return _login_form_with_error(request, form, username, SignInFailed())

    limiter.record_success(username)
    token = create_login_session(workflow.archive, username, request.headers.get("User-Agent", "browser")[:100])
    response = web.HTTPSeeOther(_local_target(str(form.get("next", ""))))
    set_cookie(request, response, SESSION_COOKIE, token, max_age=int(SESSION_LIFETIME.total_seconds()))
    raise response


def _login_form_with_error(request: web.Request, form: Any, username: str, error: QsignError) -> web.Response:
    response = aiohttp_jinja2.render_template("login.html", request, {
        "notice": None, "revoked": False, "next": _local_target(str(form.get("next", ""))),
        "error": error.message(request["language"]), "username": username})
    response.set_status(error.http_status)
    return response


async def logout(request: web.Request) -> web.Response:
    current = caller(request)
    workflow = services(request).workflow
    device = current.device_id
    with workflow.archive.transaction() as tx:
        record = tx.get_device(device)
    # A password session ends for good; a paired phone stays paired and can sign in again from its QR code.
    if record.attributes.get("kind") == "web_login":
        revoke_device(workflow.archive, device, actor=current.actor)
    response = web.HTTPSeeOther(f"{WEB_PREFIX}/login?reason=signed_out")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def switch_language(request: web.Request) -> web.Response:
    language = request.match_info["language"]
    if language not in SUPPORTED_LANGUAGES:
        raise web.HTTPNotFound()
    response = web.HTTPSeeOther(_local_target(request.query.get("next")))
    set_cookie(request, response, LANGUAGE_COOKIE, language, max_age=365 * 24 * 3600)
    raise response


async def pair_page(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("pair.html", request, {
        "code": request.query.get("code", "")[:40], "device_name": "", "error": None})


async def pair(request: web.Request) -> web.Response:
    form = await request.post()
    code = str(form.get("code", ""))[:40]
    name = str(form.get("device_name", "")).strip()[:100]
    web_services = services(request)
    try:
        if not name:
            raise AgentError()
        paired = redeem_pairing_code(web_services.workflow.archive, code, name)
    except AgentError as error:
        gettext = request["gettext"]
        message = (gettext("Enter a name for this phone, such as \u201cLi's phone\u201d.") if not name
                   else error.message(request["language"]))
        response = aiohttp_jinja2.render_template("pair.html", request, {
            "code": code, "device_name": name, "error": message})
        response.set_status(400 if not name else error.http_status)
        return response
    response = web.HTTPSeeOther(f"{WEB_PREFIX}/")
    # The phone keeps the device token as its session; it works until the device is revoked.
    set_cookie(request, response, SESSION_COOKIE, paired.token, max_age=5 * 365 * 24 * 3600)
    raise response


async def home(request: web.Request) -> web.Response:
    current = caller(request)
    workflow = services(request).workflow
    counts = {}
    if current.user.has(Role.REVIEWER):
        counts["to_review"] = len(workflow.list(current, "to_review"))
    if current.user.has(Role.OFFICER):
        counts["to_sign"] = len(workflow.list(current, "to_sign"))
    creates = any(current.user.roles & template.requester_roles for template in workflow.policy.templates.values())
    return aiohttp_jinja2.render_template("home.html", request, {"counts": counts, "creates": creates})


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/", home)
    router.add_get("/login", login_page)
    router.add_post("/login", login)
    router.add_post("/logout", logout)
    router.add_get("/lang/{language}", switch_language)
    router.add_get("/pair", pair_page)
    router.add_post("/pair", pair)
