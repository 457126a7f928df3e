"""The agent's HTTP API (aiohttp): middlewares for request ids, Host allow-list and errors, and the v1 routes.

Every error response is ``{"code", "message", "request_id"}`` (plus ``ids`` and, for ``policy_denied``,
``rule``), the message in the language ``Accept-Language`` prefers. No response carries CORS headers, so
browsers keep other origins from reading the API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from qsign.errors import QsignError
from qsign.i18n import negotiate_language

from agent.errors import (BadRequestBody, HostNotAllowed, MethodNotAllowed, NotFound, RequestTooLarge)
from agent.responses import signed_file_response, stream_request_events
from agent.pairing import authenticate, redeem_pairing_code
from agent.settings import LOOPBACK_HOSTS, AgentSettings
from agent.workflow import Caller, Workflow, request_to_dict

__all__ = ["create_app", "OPENAPI_PATH", "API_PREFIX", "API_ROUTES"]

_logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
#: Seconds between keep-alive comments on an idle event stream.

WORKFLOW = web.AppKey("workflow", Workflow)
SETTINGS = web.AppKey("settings", AgentSettings)
INFO = web.AppKey("info", dict)
ALLOWED_HOSTS = web.AppKey("allowed_hosts", set)


def _language(request: web.Request) -> str:
    return negotiate_language(request.headers.get("Accept-Language"))


def _error_response(request: web.Request, error: QsignError) -> web.Response:
    body = error.to_dict(_language(request))
    body["request_id"] = request.get("request_id", "")
    return web.json_response(body, status=error.http_status, headers={"X-Request-Id": body["request_id"]},
                             dumps=lambda value: json.dumps(value, ensure_ascii=False))


def allowed_hosts(settings: AgentSettings) -> set[str]:
    hosts = {*LOOPBACK_HOSTS, settings.host, f"{settings.name}.local", *settings.allowed_hosts}
    return {host.lower() for host in hosts}


def _host_name(header: str) -> str:
    if header.startswith("["):
        return header[1:header.find("]")].lower()
    return header.rsplit(":", 1)[0].lower() if header.count(":") == 1 else header.lower()


@web.middleware
async def _middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    request["request_id"] = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
    settings = request.app[SETTINGS]
    try:
        host = _host_name(request.headers.get("Host", ""))
        if host not in request.app[ALLOWED_HOSTS]:
            raise HostNotAllowed(host=host[:100] or "(none)")
        response = await handler(request)
        response.headers.setdefault("X-Request-Id", request["request_id"])
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response
    except QsignError as error:
        if error.http_status >= 500:
            _logger.warning("%s %s failed: %s %s", request.method, request.path, error.code, error.ids)
        return _error_response(request, error)
    except web.HTTPRequestEntityTooLarge:
        return _error_response(request, RequestTooLarge(limit=settings.max_upload_bytes))
    except web.HTTPNotFound:
        return _error_response(request, NotFound(path=request.path[:200]))
    except web.HTTPMethodNotAllowed:
        return _error_response(request, MethodNotAllowed(method=request.method, path=request.path[:200]))
    except web.HTTPException as http_error:
        if http_error.status >= 400:
            error = QsignError()
            error.http_status = http_error.status
            return _error_response(request, error)
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        # Any other exception is a bug; the client still gets the documented error object.
        _logger.exception("%s %s failed (request id %s)", request.method, request.path, request["request_id"])
        return _error_response(request, QsignError())


def _caller(request: web.Request) -> Caller:
    workflow = request.app[WORKFLOW]
    device = authenticate(workflow.archive, request.headers.get("Authorization"))
    return workflow.caller(device)


async def _json_body(request: web.Request, allowed: dict[str, type | tuple[type, ...]],
                     required: set[str]) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise BadRequestBody(detail="not a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequestBody(detail="not a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequestBody(detail=f"unknown field {unknown[0]!r}")
    for name in required:
        if name not in body:
            raise BadRequestBody(detail=f"missing field {name!r}")
    for name, value in body.items():
        if value is not None and not isinstance(value, allowed[name]) or isinstance(value, bool) and allowed[name] is str:
            raise BadRequestBody(detail=f"field {name!r} has the wrong type")
    return body


def _request_json(request: web.Request, record: Any) -> web.Response:
    workflow = request.app[WORKFLOW]
    return web.json_response(request_to_dict(record, workflow.policy, _language(request)))


# Routes without a device token

async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def api_info(request: web.Request) -> web.Response:
    return web.json_response(request.app[INFO])


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_PATH.read_bytes(), content_type="application/json")


async def pair(request: web.Request) -> web.Response:
    body = await _json_body(request, {"code": str, "device_name": str}, {"code", "device_name"})
    name = body["device_name"].strip()
    if not 1 <= len(name) <= 100:
        raise BadRequestBody(detail="device_name must have 1 to 100 characters")
    paired = redeem_pairing_code(request.app[WORKFLOW].archive, body["code"], name)
    return web.json_response({"device_id": paired.device_id, "user": paired.user, "token": paired.token},
                             status=201)


# Routes for paired devices

async def me(request: web.Request) -> web.Response:
    caller = _caller(request)
    user = caller.user
    return web.json_response({"user": user.id, "name": user.name, "roles": sorted(r.value for r in user.roles),
                              "device_id": caller.device_id})


async def create_request(request: web.Request) -> web.Response:
    caller = _caller(request)
    workflow = request.app[WORKFLOW]
    if not request.content_type.startswith("multipart/"):
        raise BadRequestBody(detail="send multipart/form-data with the fields file, template_id and signer")

    fields: dict[str, str] = {}
    data = None
    file_name = "document"
    declared_type = None
    try:
        reader = await request.multipart()
        async for part in reader:
            if part.name == "file":
                file_name = Path(part.filename or "document").name[:200] or "document"
                declared_type = part.headers.get("Content-Type")
                data = await part.read()
            elif part.name in ("template_id", "signer"):
                fields[part.name] = (await part.text())[:200]
            else:
                raise BadRequestBody(detail=f"unknown field {str(part.name)[:50]!r}")
    except (HttpProcessingError, ValueError, LookupError) as error:
        # aiohttp raises these for malformed part headers, boundaries and charsets.
        raise BadRequestBody(detail=f"malformed multipart body ({type(error).__name__})") from None
    for name in ("template_id", "signer"):
        if not fields.get(name):
            raise BadRequestBody(detail=f"missing field {name!r}")
    if not data:
        raise BadRequestBody(detail="missing or empty field 'file'")

    record = await workflow.create(caller, bytes(data), file_name, declared_type, fields["template_id"],
                                   fields["signer"])
    response = _request_json(request, record)
    response.set_status(201)
    return response


async def list_requests(request: web.Request) -> web.Response:
    caller = _caller(request)
    workflow = request.app[WORKFLOW]
    records = workflow.list(caller, request.query.get("view", "mine"))
    language = _language(request)
    return web.json_response({"requests": [request_to_dict(r, workflow.policy, language) for r in records]})


async def get_request(request: web.Request) -> web.Response:
    caller = _caller(request)
    return _request_json(request, request.app[WORKFLOW].get(caller, request.match_info["request_id"]))


async def get_document(request: web.Request) -> web.Response:
    caller = _caller(request)
    record, data = request.app[WORKFLOW].read_original(caller, request.match_info["request_id"])
    return web.Response(body=data, content_type=record.attributes.get("media_type") or "application/octet-stream",
                        headers={"Content-Disposition": "attachment", "X-Content-SHA256": record.original_sha256 or ""})


async def get_page(request: web.Request) -> web.Response:
    from agent.documents import render_page

    caller = _caller(request)
    record, data = request.app[WORKFLOW].read_original(caller, request.match_info["request_id"])
    if record.attributes.get("media_type") != "application/pdf":
        raise BadRequestBody(detail="previews exist for PDF documents only")
    try:
        page = int(request.match_info["page"])
    except ValueError:
        raise BadRequestBody(detail="page must be a number") from None
    png = await render_page(data, page)
    return web.Response(body=png, content_type="image/png", headers={"X-Content-SHA256": record.original_sha256 or ""})


async def _review(request: web.Request, approve: bool) -> web.Response:
    caller = _caller(request)
    body = await _json_body(request, {"comment": str}, set()) if request.can_read_body else {}
    record = request.app[WORKFLOW].review(caller, request.match_info["request_id"], approve, body.get("comment"))
    return _request_json(request, record)


async def approve(request: web.Request) -> web.Response:
    return await _review(request, True)


async def reject(request: web.Request) -> web.Response:
    return await _review(request, False)


async def cancel(request: web.Request) -> web.Response:
    caller = _caller(request)
    return _request_json(request, request.app[WORKFLOW].cancel(caller, request.match_info["request_id"]))


async def sign(request: web.Request) -> web.Response:
    caller = _caller(request)
    body = await _json_body(request, {"pin": str, "sha256": str, "allow_final_try": bool}, {"pin", "sha256"})
    if not body["pin"] or len(body["pin"]) > 64:
        raise BadRequestBody(detail="pin must have 1 to 64 characters")
    workflow = request.app[WORKFLOW]
    # The signature runs in its own task, so a client that disconnects does not cancel it half-way.
    task = asyncio.ensure_future(workflow.sign(caller, request.match_info["request_id"], body.pop("pin"),
                                               body["sha256"], bool(body.get("allow_final_try"))))
    record = await asyncio.shield(task)
    return _request_json(request, record)


async def get_signed(request: web.Request) -> web.Response:
    caller = _caller(request)
    record, data = request.app[WORKFLOW].read_signed(caller, request.match_info["request_id"])
    return signed_file_response(record, data)


async def events(request: web.Request) -> web.StreamResponse:
    caller = _caller(request)
    workflow = request.app[WORKFLOW]
    record = workflow.get(caller, request.match_info["request_id"])
    return await stream_request_events(request, workflow, record, headers={"X-Request-Id": request["request_id"]})


#: Every route of the API as (method, path, handler); ``agent/openapi.json`` documents each of them.
API_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/healthz", healthz),
    ("GET", API_PREFIX, api_info),
    ("GET", f"{API_PREFIX}/openapi.json", openapi),
    ("POST", f"{API_PREFIX}/pairing", pair),
    ("GET", f"{API_PREFIX}/me", me),
    ("POST", f"{API_PREFIX}/requests", create_request),
    ("GET", f"{API_PREFIX}/requests", list_requests),
    ("GET", f"{API_PREFIX}/requests/{{request_id}}", get_request),
    ("GET", f"{API_PREFIX}/requests/{{request_id}}/document", get_document),
    ("GET", f"{API_PREFIX}/requests/{{request_id}}/pages/{{page}}", get_page),
    ("POST", f"{API_PREFIX}/requests/{{request_id}}/approve", approve),
    ("POST", f"{API_PREFIX}/requests/{{request_id}}/reject", reject),
    ("POST", f"{API_PREFIX}/requests/{{request_id}}/cancel", cancel),
    ("POST", f"{API_PREFIX}/requests/{{request_id}}/sign", sign),
    ("GET", f"{API_PREFIX}/requests/{{request_id}}/signed", get_signed),
    ("GET", f"{API_PREFIX}/requests/{{request_id}}/events", events),
]
# Bulk sealing batches (agent.batches imports this module only inside its handlers).
from agent.batches import BATCH_ROUTES  # noqa: E402

API_ROUTES += BATCH_ROUTES


def create_app(workflow: Workflow, settings: AgentSettings, info: dict[str, Any]) -> web.Application:
    """Build the aiohttp application around ``workflow``; ``info`` is served at ``/api/v1``."""
    # The multipart overhead beyond the file itself is small; 64 KiB leaves room for the other fields.
    app = web.Application(middlewares=[_middleware], client_max_size=settings.max_upload_bytes + 64 * 1024)
    app[WORKFLOW] = workflow
    app[SETTINGS] = settings
    app[INFO] = info
    app[ALLOWED_HOSTS] = allowed_hosts(settings)
    for method, path, handler in API_ROUTES:
        app.router.add_route(method, path, handler)

    from agent.web import setup_web

    setup_web(app, workflow, settings)
    return app
