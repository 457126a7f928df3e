"""Pages of the request workflow: new request, lists, request page, review, sign, live state, download."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from agent.documents import render_page
from agent.errors import BadRequestBody
from agent.events import TERMINAL_STATES
from agent.responses import signed_file_response, stream_request_events
from agent.web.app import WEB_PREFIX, caller, redirect, require_role, services
from agent.web.errors import FormInvalid
from agent.web.labels import failure_hint
from agent.workflow import Caller, RequestState
from policies import Role, Template, may_review
from qsign.errors import QsignError

__all__ = ["register"]

_logger = logging.getLogger(__name__)

#: Seconds the sign form waits for the signature before it shows the live state page instead.
SIGN_FORM_WAIT = 1.5
#: Pages shown as images on a request page; for a longer document the page notes how many are not shown.
MAX_PREVIEW_PAGES = 30


def _templates_for(current: Caller, templates: dict[str, Template]) -> list[Template]:
    return [t for t in templates.values() if current.user.roles & t.requester_roles]


async def new_request_page(request: web.Request) -> web.Response:
    return _render_new(request, None, {})


def _render_new(request: web.Request, error: str | None, values: dict[str, str]) -> web.Response:
    current = caller(request)
    policy = services(request).workflow.policy
    signers = [user for user in policy.users.values() if user.has(Role.OFFICER)]
    response = aiohttp_jinja2.render_template("new_request.html", request, {
        "templates": _templates_for(current, policy.templates), "signers": signers, "error": error,
        "values": values})
    if error:
        response.set_status(400)
    return response


async def create_request(request: web.Request) -> web.Response:
    current = caller(request)
    form = await request.post()
    upload = form.get("file")
    values = {"template_id": str(form.get("template_id", "")), "signer": str(form.get("signer", ""))}
    gettext = request["gettext"]
    if not isinstance(upload, web.FileField):
        return _render_new(request, gettext("Choose a file to upload."), values)
    data = upload.file.read()
    if not data:
        return _render_new(request, gettext("The chosen file is empty. Choose another file."), values)
    try:
        record = await services(request).workflow.create(
            current, data, Path(upload.filename or "document").name[:200] or "document", upload.content_type,
            values["template_id"], values["signer"])
    except QsignError as error:
        return _render_new(request, error.message(request["language"]), values)
    raise redirect(f"{WEB_PREFIX}/requests/{record.id}")


def _list_page(request: web.Request, title: str, records: list[Any], empty: str) -> web.Response:
    policy = services(request).workflow.policy
    rows = [{"record": r, "template": policy.templates.get(r.template_id or "")} for r in records]
    rows.sort(key=lambda row: row["record"].created_at, reverse=True)
    return aiohttp_jinja2.render_template("list.html", request, {"title": title, "rows": rows, "empty": empty})


async def my_requests(request: web.Request) -> web.Response:
    current = caller(request)
    gettext = request["gettext"]
    records = services(request).workflow.list(current, "mine")
    return _list_page(request, gettext("My requests"), records, gettext("You have not sent any request yet."))


async def review_queue(request: web.Request) -> web.Response:
    current = require_role(request, Role.REVIEWER)
    gettext = request["gettext"]
    records = services(request).workflow.list(current, "to_review")
    return _list_page(request, gettext("Waiting for my review"), records, gettext("Nothing is waiting for your review."))


async def inbox(request: web.Request) -> web.Response:
    current = require_role(request, Role.OFFICER)
    gettext = request["gettext"]
    workflow = services(request).workflow
    waiting = workflow.list(current, "to_sign")
    history = [r for r in workflow.list(current, "all")
               if r.attributes.get("signer") == current.user.id and r.state == RequestState.SIGNED]
    policy = workflow.policy
    return aiohttp_jinja2.render_template("inbox.html", request, {
        "waiting": [{"record": r, "template": policy.templates.get(r.template_id or "")} for r in waiting],
        "history": [{"record": r, "template": policy.templates.get(r.template_id or "")}
                    for r in sorted(history, key=lambda r: r.updated_at, reverse=True)],
        "title": gettext("My inbox")})


def _request_context(request: web.Request, request_id: str) -> dict[str, Any]:
    current = caller(request)
    workflow = services(request).workflow
    record = workflow.get(current, request_id)
    template = workflow.policy.templates.get(record.template_id or "")
    signer = record.attributes.get("signer", "")
    approvers = [a["reviewer"] for a in record.attributes.get("approvals", [])]
    can_review = (template is not None and record.state == RequestState.WAITING_FOR_REVIEW
                  and may_review(current.user, template, record.requester or "", signer, approvers,
                                 _now()).allowed)
    pages = record.attributes.get("pages") or 0
    error = services(request).sign_errors.get(record.id) if record.state == RequestState.FAILED else None
    return {
        "record": record, "template": template,
        "signer": workflow.policy.users.get(signer),
        "requester": workflow.policy.users.get(record.requester or ""),
        "page_numbers": list(range(1, min(pages, MAX_PREVIEW_PAGES) + 1)),
        "pages_hidden": max(0, pages - MAX_PREVIEW_PAGES),
        "can_review": can_review,
        "can_sign": signer == current.user.id and record.state in (RequestState.APPROVED, RequestState.FAILED),
        "can_cancel": record.requester == current.user.id and record.state in (
            RequestState.WAITING_FOR_REVIEW, RequestState.APPROVED, RequestState.FAILED),
        "is_signer": signer == current.user.id,
        "failure_message": error.message(request["language"]) if error else None,
        "failure_hint": failure_hint(record.attributes.get("error_code"), request["gettext"]),
        "terminal": record.state in {state.value for state in TERMINAL_STATES},
        "sha256_groups": _groups(record.original_sha256 or ""),
        "error": None,
    }


def _now():
    import datetime

    return datetime.datetime.now(datetime.timezone.utc)


def _groups(digest: str) -> list[str]:
    return [digest[i:i + 8] for i in range(0, len(digest), 8)]


async def request_page(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("request.html", request,
                                          _request_context(request, request.match_info["request_id"]))


async def sign_page(request: web.Request) -> web.Response:
    require_role(request, Role.OFFICER)
    return aiohttp_jinja2.render_template("sign.html", request,
                                          _request_context(request, request.match_info["request_id"]))


async def page_image(request: web.Request) -> web.Response:
    current = caller(request)
    record, data = services(request).workflow.read_original(current, request.match_info["request_id"])
    if record.attributes.get("media_type") != "application/pdf":
        raise BadRequestBody(detail="previews exist for PDF documents only")
    png = await render_page(data, int(request.match_info["page"]))
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "private, max-age=300"})


async def review(request: web.Request) -> web.Response:
    current = require_role(request, Role.REVIEWER)
    form = await request.post()
    action = str(form.get("action", ""))
    if action not in ("approve", "reject"):
        raise FormInvalid(detail="action")
    comment = str(form.get("comment", "")).strip()[:2000] or None
    request_id = request.match_info["request_id"]
    services(request).workflow.review(current, request_id, action == "approve", comment)
    raise redirect(f"{WEB_PREFIX}/requests/{request_id}")


async def cancel(request: web.Request) -> web.Response:
    current = caller(request)
    request_id = request.match_info["request_id"]
    services(request).workflow.cancel(current, request_id)
    raise redirect(f"{WEB_PREFIX}/requests/{request_id}")


async def sign(request: web.Request) -> web.Response:
    """Start the signature and wait briefly; the sign page then shows the live state from the event stream."""
    current = require_role(request, Role.OFFICER)
    request_id = request.match_info["request_id"]
    form = await request.post()
    confirmed = str(form.get("sha256", ""))
    web_services = services(request)
    gettext = request["gettext"]

    if form.get("confirm") != "yes":
        return _sign_error(request, request_id, gettext("Compare the SHA-256 with the document and tick the box "
                                                        "to confirm it."))
    pin = str(form.get("pin", ""))
    if not 1 <= len(pin) <= 64:
        return _sign_error(request, request_id, gettext("Enter the token's PIN (1 to 64 characters)."))

    web_services.sign_errors.pop(request_id, None)
    task = asyncio.ensure_future(web_services.workflow.sign(current, request_id, pin, confirmed))
    del pin
    web_services.tasks.add(task)
    task.add_done_callback(lambda done: _signature_done(web_services, request_id, done))
    await asyncio.wait({task}, timeout=SIGN_FORM_WAIT)

    if task.done() and task.exception() is not None:
        error = task.exception()
        record = web_services.workflow.get(current, request_id)
        # An error before the request was claimed (digest, policy, rate limit) leaves its state as it was.
        if isinstance(error, QsignError) and record.state != RequestState.FAILED:
            return _sign_error(request, request_id, error.message(request["language"]), error.http_status)
    raise redirect(f"{WEB_PREFIX}/requests/{request_id}/sign")


def _signature_done(web_services: Any, request_id: str, task: asyncio.Future[Any]) -> None:
    web_services.tasks.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if isinstance(error, QsignError):
        web_services.sign_errors[request_id] = error
    elif error is not None:
        _logger.error("signature of request %s from the web page failed: %r", request_id, error)


def _sign_error(request: web.Request, request_id: str, message: str, status: int = 400) -> web.Response:
    context = _request_context(request, request_id)
    context["error"] = message
    response = aiohttp_jinja2.render_template("sign.html", request, context)
    response.set_status(status)
    return response


async def download(request: web.Request) -> web.Response:
    current = caller(request)
    record, data = services(request).workflow.read_signed(current, request.match_info["request_id"])
    return signed_file_response(record, data)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events of one request, as the API sends them, for the signed-in browser."""
    workflow = services(request).workflow
    record = workflow.get(caller(request), request.match_info["request_id"])
    return await stream_request_events(request, workflow, record, event_name="state")


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/requests", my_requests)
    router.add_get("/requests/new", new_request_page)
    router.add_post("/requests/new", create_request)
    router.add_get("/review", review_queue)
    router.add_get("/inbox", inbox)
    router.add_get("/requests/{request_id}", request_page)
    router.add_get("/requests/{request_id}/pages/{page:[0-9]{1,5}}.png", page_image)
    router.add_get("/requests/{request_id}/events", events)
    router.add_post("/requests/{request_id}/review", review)
    router.add_post("/requests/{request_id}/cancel", cancel)
    router.add_get("/requests/{request_id}/sign", sign_page)
    router.add_post("/requests/{request_id}/sign", sign)
    router.add_get("/requests/{request_id}/signed", download)
