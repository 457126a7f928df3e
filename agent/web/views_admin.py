"""Administrator pages: users and roles, templates with seal placement, pairing, devices, tokens, audit, backup."""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import segno
from aiohttp import web
from PIL import Image, ImageDraw

from archive.audit import head as audit_head
from archive.db import read_transaction
from agent.pairing import create_pairing_code, revoke_device
from agent.web.app import WEB_PREFIX, redirect, require_role, services
from agent.web.auth import MIN_PASSWORD_LENGTH
from agent.web.errors import FormInvalid
from agent.web.policy_edit import update_policy
from agent.web.readers import list_readers
from agent.web.sample_page import MAX_SAMPLE_BYTES, SamplePage, draw_rect, render_sample
from agent.web.template_form import (A4_POINTS, PREVIEW_SCALE, SEAL_DIR, template_from_form, template_values,
                                     user_from_form, user_values)
from policies import PolicyInvalid, Role
from qsign.errors import QsignError

__all__ = ["register"]

_logger = logging.getLogger(__name__)

#: Audit entries shown, newest first.
AUDIT_PAGE_ENTRIES = 100
MAX_SEAL_IMAGE_BYTES = 1024 * 1024


def _admin(request: web.Request):
    return require_role(request, Role.ADMIN)


def _apply_policy_change(request: web.Request, change: Any) -> None:
    """Write a policy change and switch the workflow to the new policy; raises ``policy_invalid``."""
    current = _admin(request)
    web_services = services(request)
    policy, backup = update_policy(web_services.settings.policy_file, change, current.actor)
    web_services.workflow.policy = policy
    web_services.workflow.archive.audit(current.actor, "policy.changed", device=current.device_id,
                                        object_ids={"backup": backup.name})


# Users and roles

async def users_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    _admin(request)
    web_services = services(request)
    users = sorted(web_services.workflow.policy.users.values(), key=lambda user: user.id)
    response = aiohttp_jinja2.render_template("admin_users.html", request, {
        "edit": user_values(web_services.workflow.policy.users.get(request.query.get("edit", ""))),
        "users": users, "has_password": {u.id: web_services.passwords.has_password(u.id) for u in users},
        "profiles": sorted(web_services.workflow.config.tokens), "all_roles": [role.value for role in Role],
        "error": error, "min_password": MIN_PASSWORD_LENGTH})
    response.set_status(status)
    return response


async def save_user(request: web.Request) -> web.Response:
    _admin(request)
    form = await request.post()
    try:
        user_id, table = user_from_form(form)

        def change(raw: dict[str, Any]) -> None:
            raw.setdefault("users", {})[user_id] = table

        _apply_policy_change(request, change)
    except QsignError as error:
        return await users_page(request, error.message(request["language"]), error.http_status)
    raise redirect(f"{WEB_PREFIX}/admin/users")


async def set_password(request: web.Request) -> web.Response:
    current = _admin(request)
    form = await request.post()
    user_id = request.match_info["user_id"]
    web_services = services(request)
    password = str(form.get("password", ""))
    if user_id not in web_services.workflow.policy.users:
        raise FormInvalid(detail=f"unknown user {user_id!r}")
    if len(password) < MIN_PASSWORD_LENGTH:
        gettext = request["gettext"]
        return await users_page(request, gettext("A password needs at least {count} characters.").format(
            count=MIN_PASSWORD_LENGTH), 400)
    web_services.passwords.set_password(user_id, password)
    web_services.workflow.archive.audit(current.actor, "web.password_set", device=current.device_id,
                                        object_ids={"user": user_id})
    raise redirect(f"{WEB_PREFIX}/admin/users")


# Templates

async def templates_page(request: web.Request) -> web.Response:
    _admin(request)
    templates = sorted(services(request).workflow.policy.templates.values(), key=lambda t: t.id)
    return aiohttp_jinja2.render_template("admin_templates.html", request, {"templates": templates})


def _render_template_form(request: web.Request, template_id: str | None, values: dict[str, Any],
                          error: str | None = None, status: int = 200,
                          sample: SamplePage | None = None) -> web.Response:
    """Render the template editor; the seal is placed on ``sample``'s first page, or on a blank A4 page."""
    page_size = (sample.width, sample.height) if sample else A4_POINTS
    response = aiohttp_jinja2.render_template("admin_template_edit.html", request, {
        "template_id": template_id, "values": values, "error": error, "all_roles": [role.value for role in Role],
        "page_width": f"{page_size[0]:g}", "page_height": f"{page_size[1]:g}", "sample": sample})
    response.set_status(status)
    return response


async def template_edit_page(request: web.Request) -> web.Response:
    _admin(request)
    template_id = request.match_info.get("template_id")
    template = services(request).workflow.policy.templates.get(template_id or "")
    if template_id and template is None:
        raise web.HTTPNotFound()
    return _render_template_form(request, template_id, template_values(template))


async def template_save(request: web.Request) -> web.Response:
    _admin(request)
    web_services = services(request)
    form = await request.post()
    template_id = request.match_info.get("template_id")
    values = {key: form.getall(key) if key.endswith("_roles") else form.get(key) for key in form
              if key not in ("seal_image", "sample_pdf")}
    sample = web_services.sample_pages.get(str(form.get("sample", "")))
    if "show_sample" in form:
        return await _show_sample(request, template_id, values, form.get("sample_pdf"), sample)
    try:
        new_id, table = template_from_form(form, template_id, web_services.workflow.policy)
        if sample is not None:
            _check_rect_on_page(table, sample)
        upload = form.get("seal_image")
        if isinstance(upload, web.FileField) and upload.filename:
            table.setdefault("seal", {})["image"] = _save_seal_image(web_services.settings.policy_file.parent,
                                                                     new_id, upload)
        elif template_id and "seal" in table:
            old = web_services.workflow.policy.templates[template_id].seal
            if old is not None and old.image:
                table["seal"]["image"] = old.image

        def change(raw: dict[str, Any]) -> None:
            raw.setdefault("templates", {})[new_id] = table

        _apply_policy_change(request, change)
    except (QsignError, PolicyInvalid) as error:
        return _render_template_form(request, template_id, values, error.message(request["language"]),
                                     error.http_status, sample)
    raise redirect(f"{WEB_PREFIX}/admin/templates")


async def _show_sample(request: web.Request, template_id: str | None, values: dict[str, Any], upload: Any,
                       previous: SamplePage | None) -> web.Response:
    """Render the editor again with the uploaded sample PDF's first page to place the seal on."""
    try:
        if not (isinstance(upload, web.FileField) and upload.filename):
            raise FormInvalid(detail="choose a sample PDF document first")
        png, width, height = await render_sample(upload.file.read(MAX_SAMPLE_BYTES + 1))
    except QsignError as error:
        _logger.info("sample document for the template editor rejected: %s", error.code)
        return _render_template_form(request, template_id, values, error.message(request["language"]),
                                     error.http_status, previous)
    sample = services(request).sample_pages.add(png, width, height)
    values.update(_fit_rect(values, width, height))
    _logger.info("sample document page %s (%g x %g pt) shown in the template editor", sample.id, width, height)
    return _render_template_form(request, template_id, values, sample=sample)


def _fit_rect(values: dict[str, Any], width: float, height: float) -> dict[str, str]:
    """Move the form's seal rectangle onto a ``width`` × ``height`` page, shrinking it only if it is larger."""
    try:
        x1, y1, x2, y2 = (float(values.get(name) or "") for name in ("x1", "y1", "x2", "y2"))
    except ValueError:
        return {}
    seal_width, seal_height = min(max(x2 - x1, 1.0), width), min(max(y2 - y1, 1.0), height)
    x1 = min(max(x1, 0.0), width - seal_width)
    y1 = min(max(y1, 0.0), height - seal_height)
    return {"x1": f"{x1:g}", "y1": f"{y1:g}", "x2": f"{x1 + seal_width:g}", "y2": f"{y1 + seal_height:g}"}


def _check_rect_on_page(table: dict[str, Any], sample: SamplePage) -> None:
    """Raise ``form_invalid`` when the seal rectangle is not inside the sample document's page."""
    rect = table.get("seal", {}).get("rect")
    if rect and not (0 <= rect[0] and 0 <= rect[1] and rect[2] <= sample.width and rect[3] <= sample.height):
        raise FormInvalid(detail=f"the seal rectangle {rect} is not inside the sample page "
                                 f"({sample.width:g} x {sample.height:g} pt)")


async def sample_page_image(request: web.Request) -> web.Response:
    """Return a sample document's first page as PNG, with the seal rectangle ``rect`` drawn when given."""
    _admin(request)
    sample = services(request).sample_pages.get(request.match_info["sample_id"])
    if sample is None:
        raise web.HTTPNotFound()
    png = draw_rect(sample.png, sample.width, sample.height, request.query.get("rect", ""))
    return web.Response(body=png, content_type="image/png")


def _save_seal_image(policy_dir: Path, template_id: str, upload: web.FileField) -> str:
    """Check the uploaded seal image (PNG or JPEG, at most 1 MiB) and store it as PNG next to the policy file."""
    data = upload.file.read(MAX_SEAL_IMAGE_BYTES + 1)
    if len(data) > MAX_SEAL_IMAGE_BYTES:
        raise FormInvalid(detail="the seal image is larger than 1 MiB")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("PNG", "JPEG"):
                raise FormInvalid(detail="the seal image must be PNG or JPEG")
            if image.width * image.height > 4096 * 4096:
                raise FormInvalid(detail="the seal image is larger than 4096 × 4096 pixels")
            converted = image.convert("RGBA")
    except (OSError, Image.DecompressionBombError) as error:
        raise FormInvalid(detail="the seal image cannot be read") from error
    relative = Path(SEAL_DIR) / f"{template_id}.png"
    target = policy_dir / relative
    target.parent.mkdir(exist_ok=True)
    converted.save(target, format="PNG")
    return str(relative)


async def seal_preview(request: web.Request) -> web.Response:
    """Draw an A4 page with a grid and, when ``rect`` is given, the seal rectangle, for placing the seal."""
    _admin(request)
    width, height = (round(A4_POINTS[0] * PREVIEW_SCALE), round(A4_POINTS[1] * PREVIEW_SCALE))
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 50):
        draw.line([(x, 0), (x, height)], fill=(232, 236, 240))
    for y in range(0, height, 50):
        draw.line([(0, y), (width, y)], fill=(232, 236, 240))
    draw.rectangle([0, 0, width - 1, height - 1], outline=(150, 150, 150))
    rect = request.query.get("rect", "")
    try:
        x1, y1, x2, y2 = (float(part) for part in rect.split(","))
        draw.rectangle([x1 * PREVIEW_SCALE, (A4_POINTS[1] - y2) * PREVIEW_SCALE,
                        x2 * PREVIEW_SCALE, (A4_POINTS[1] - y1) * PREVIEW_SCALE], outline=(192, 0, 0), width=3)
    except ValueError:
        pass
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return web.Response(body=buffer.getvalue(), content_type="image/png")


# Pairing and devices

async def pairing_page(request: web.Request) -> web.Response:
    _admin(request)
    users = sorted(services(request).workflow.policy.users.values(), key=lambda user: user.id)
    return aiohttp_jinja2.render_template("admin_pairing.html", request, {"users": users, "pairing": None})


async def create_pairing(request: web.Request) -> web.Response:
    current = _admin(request)
    form = await request.post()
    web_services = services(request)
    user_id = str(form.get("user", ""))
    if user_id not in web_services.workflow.policy.users:
        raise FormInvalid(detail=f"unknown user {user_id!r}")
    code = create_pairing_code(web_services.workflow.archive, user_id, actor=current.actor)
    url = f"{request.url.origin()}{WEB_PREFIX}/pair?code={code.code}"
    qr = segno.make(url, error="m").svg_data_uri(scale=6, border=2)
    users = sorted(web_services.workflow.policy.users.values(), key=lambda user: user.id)
    return aiohttp_jinja2.render_template("admin_pairing.html", request, {
        "users": users, "pairing": {"code": code.code, "url": url, "qr": qr, "user": user_id,
                                     "expires_at": code.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC")}})


async def devices_page(request: web.Request) -> web.Response:
    _admin(request)
    with services(request).workflow.archive.transaction() as tx:
        devices = tx.list_devices(include_revoked=True)
    devices = [d for d in devices if d.token_hash]
    devices.sort(key=lambda d: (d.revoked_at is not None, d.paired_at), reverse=False)
    return aiohttp_jinja2.render_template("admin_devices.html", request, {"devices": devices})


async def revoke(request: web.Request) -> web.Response:
    current = _admin(request)
    revoke_device(services(request).workflow.archive, request.match_info["device_id"], actor=current.actor)
    raise redirect(f"{WEB_PREFIX}/admin/devices")


# Tokens, readers, audit, backup

async def tokens_page(request: web.Request) -> web.Response:
    _admin(request)
    from token_drivers.cli import collect_tokens
    from token_drivers.module import load_module

    config = services(request).workflow.config
    modules = sorted({profile.module for profile in config.tokens.values()})
    tokens: list[dict[str, Any]] = []
    errors: list[str] = []
    for module_path in modules:
        try:
            found = await asyncio.to_thread(collect_tokens, module_path)
            tokens.extend(found)
        except QsignError as error:
            errors.append(f"{module_path}: {error.message(request['language'])}")
    readers = await asyncio.to_thread(list_readers)
    reader_error = request["gettext"](readers.problem) if readers.problem else None
    return aiohttp_jinja2.render_template("admin_tokens.html", request, {
        "tokens": tokens, "errors": errors, "readers": readers.names, "reader_error": reader_error,
        "profiles": config.tokens})


async def audit_page(request: web.Request) -> web.Response:
    require_role(request, Role.ADMIN, Role.AUDITOR)
    archive = services(request).workflow.archive
    report = await asyncio.to_thread(archive.verify)
    with read_transaction(archive.engine) as connection:
        last_seq, _ = audit_head(connection)
    entries = list(reversed(archive.audit_entries(after_seq=max(0, last_seq - AUDIT_PAGE_ENTRIES))))
    return aiohttp_jinja2.render_template("admin_audit.html", request, {
        "report": report, "findings": [(f.severity.value, f.message(request["language"])) for f in report.findings],
        "entries": entries})


async def backup(request: web.Request) -> web.StreamResponse:
    current = _admin(request)
    from archive.backup import create_backup

    archive = services(request).workflow.archive
    with tempfile.TemporaryDirectory(prefix="qsign-web-backup-") as directory:
        path = Path(directory) / "backup.tar"
        summary = await asyncio.to_thread(create_backup, archive, path)
        archive.audit(current.actor, "web.backup_downloaded", device=current.device_id)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        response = web.StreamResponse(headers={
            "Content-Type": "application/x-tar",
            "Content-Disposition": f"attachment; filename=\"qsign-backup-{stamp}.tar\"",
            "Content-Length": str(os.path.getsize(path))})
        await response.prepare(request)
        with path.open("rb") as handle:
            while chunk := handle.read(1024 * 1024):
                await response.write(chunk)
        await response.write_eof()
        _logger.info("backup of %d documents downloaded by %s", getattr(summary, "documents", -1), current.actor)
        return response


async def backup_page(request: web.Request) -> web.Response:
    _admin(request)
    return aiohttp_jinja2.render_template("admin_backup.html", request, {})


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/admin/users", users_page)
    router.add_post("/admin/users", save_user)
    router.add_post("/admin/users/{user_id}/password", set_password)
    router.add_get("/admin/templates", templates_page)
    router.add_get("/admin/templates/new", template_edit_page)
    router.add_post("/admin/templates/new", template_save)
    router.add_get("/admin/seal-preview.png", seal_preview)
    router.add_get("/admin/sample-pages/{sample_id}.png", sample_page_image)
    router.add_get("/admin/templates/{template_id}", template_edit_page)
    router.add_post("/admin/templates/{template_id}", template_save)
    router.add_get("/admin/pairing", pairing_page)
    router.add_post("/admin/pairing", create_pairing)
    router.add_get("/admin/devices", devices_page)
    router.add_post("/admin/devices/{device_id}/revoke", revoke)
    router.add_get("/admin/tokens", tokens_page)
    router.add_get("/audit", audit_page)
    router.add_get("/admin/backup", backup_page)
    router.add_post("/admin/backup", backup)
