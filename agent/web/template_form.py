"""Form fields of the administrator's user and template editors, to and from policy file tables.

The forms send strings, and these functions turn them into the TOML tables of the policy file. They
raise ``form_invalid``, naming the field, for what ``policies.parse_policy`` cannot check itself: numbers
that do not parse, or an id that is not a valid policy key. Date-times in the forms are UTC.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from multidict import MultiDictProxy

from agent.web.errors import FormInvalid
from policies import Policy, Role, Template, User

__all__ = ["A4_POINTS", "PREVIEW_SCALE", "SEAL_DIR", "template_values", "template_from_form", "user_from_form",
           "user_values"]

#: The page used to place a seal: A4 portrait in PDF points (1/72 inch).
A4_POINTS = (595.0, 842.0)
#: Preview pixels per PDF point (96 dpi).
PREVIEW_SCALE = 96 / 72
#: Folder next to the policy file for uploaded seal images.
SEAL_DIR = "seals"
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ROLES = [role.value for role in Role]


def _text(form: MultiDictProxy[Any], name: str, limit: int = 200) -> str:
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


def _number(form: MultiDictProxy[Any], name: str, kind: type = int) -> Any:
    text = _text(form, name)
    try:
        return kind(text)
    except ValueError:
        raise FormInvalid(detail=f"{name} must be a number, not {text!r}") from None


def _when(form: MultiDictProxy[Any], name: str) -> datetime.datetime | None:
    text = _text(form, name)
    if not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise FormInvalid(detail=f"{name} must be a date and time such as 2026-01-31T08:00, not {text!r}") from None
    return value.replace(tzinfo=datetime.timezone.utc) if value.tzinfo is None else value


def _roles(form: MultiDictProxy[Any], name: str) -> list[str]:
    return [role for role in _ROLES if role in form.getall(name, [])]


def _form_time(value: datetime.datetime | None) -> str:
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M") if value else ""


def template_values(template: Template | None) -> dict[str, Any]:
    """Return the editor's field values for ``template`` (defaults for a new one)."""
    if template is None:
        return {"id": "", "name_zh": "", "name_en": "", "requester_roles": ["operator", "officer"],
                "signer_roles": ["officer"], "reviewer_roles": ["reviewer"], "required_approvals": "1",
                "reviewer_not_signer": "yes", "document_types": "application/pdf", "max_bytes": str(20 * 1024 * 1024),
                "max_pages": "500", "signature_format": "pades", "signature_level": "B-B", "reason": "", "location": "", "valid_from": "",
                "valid_until": "", "seal": "yes", "seal_page": "1", "x1": "400", "y1": "40", "x2": "550",
                "y2": "115", "seal_text": "", "seal_image": ""}
    seal = template.seal
    rect = seal.rect if seal else (400.0, 40.0, 550.0, 115.0)
    return {
        "id": template.id, "name_zh": template.name_zh, "name_en": template.name_en,
        "requester_roles": sorted(r.value for r in template.requester_roles),
        "signer_roles": sorted(r.value for r in template.signer_roles),
        "reviewer_roles": sorted(r.value for r in template.reviewer_roles),
        "required_approvals": str(template.required_approvals),
        "reviewer_not_signer": "yes" if template.reviewer_not_signer else "",
        "document_types": ", ".join(template.document_types), "max_bytes": str(template.max_bytes),
        "max_pages": str(template.max_pages), "signature_format": template.signature_format,
        "signature_level": template.signature_level,
        "reason": template.reason or "", "location": template.location or "",
        "valid_from": _form_time(template.valid_from), "valid_until": _form_time(template.valid_until),
        "seal": "yes" if seal else "", "seal_page": str(seal.page if seal else 1),
        "x1": f"{rect[0]:g}", "y1": f"{rect[1]:g}", "x2": f"{rect[2]:g}", "y2": f"{rect[3]:g}",
        "seal_text": (seal.text if seal else None) or "", "seal_image": (seal.image if seal else None) or "",
    }


def template_from_form(form: MultiDictProxy[Any], template_id: str | None, policy: Policy) -> tuple[str, dict[str, Any]]:
    """Build the ``[templates.<id>]`` table from the editor; a new template takes its id from the form."""
    new_id = template_id or _text(form, "id", 64)
    if not _ID.match(new_id):
        raise FormInvalid(detail=f"the id must be lower-case letters, digits, - or _, not {new_id!r}")
    if template_id is None and new_id in policy.templates:
        raise FormInvalid(detail=f"a template {new_id} already exists")

    table: dict[str, Any] = {
        "name_zh": _text(form, "name_zh"), "name_en": _text(form, "name_en"),
        "requester_roles": _roles(form, "requester_roles"), "signer_roles": _roles(form, "signer_roles"),
        "reviewer_roles": _roles(form, "reviewer_roles"),
        "required_approvals": _number(form, "required_approvals"),
        "reviewer_not_signer": form.get("reviewer_not_signer") == "yes",
        "document_types": [t.strip() for t in _text(form, "document_types", 1000).split(",") if t.strip()],
        "max_bytes": _number(form, "max_bytes"), "max_pages": _number(form, "max_pages"),
        "signature_format": _text(form, "signature_format"), "signature_level": _text(form, "signature_level"),
    }
    # The editor has no fields for a template's own TSA; an edit keeps the table the file has.
    existing = policy.templates.get(template_id) if template_id else None
    if existing is not None and existing.tsa is not None:
        table["tsa"] = dict(existing.tsa)
    for name in ("reason", "location"):
        if _text(form, name):
            table[name] = _text(form, name)
    for name in ("valid_from", "valid_until"):
        when = _when(form, name)
        if when is not None:
            table[name] = when
    if form.get("seal") == "yes":
        table["seal"] = {"page": _number(form, "seal_page"),
                         "rect": [round(_number(form, name, float), 2) for name in ("x1", "y1", "x2", "y2")]}
        if _text(form, "seal_text"):
            table["seal"]["text"] = _text(form, "seal_text")
    return new_id, table


def user_values(user: User | None) -> dict[str, Any]:
    """Return the user editor's field values for ``user`` (empty fields for a new user)."""
    if user is None:
        return {"id": "", "name": "", "roles": [], "token_profile": "", "sign_from": "", "sign_until": ""}
    return {"id": user.id, "name": user.name, "roles": [role.value for role in user.roles],
            "token_profile": user.token_profile or "", "sign_from": _form_time(user.sign_from),
            "sign_until": _form_time(user.sign_until)}


def user_from_form(form: MultiDictProxy[Any]) -> tuple[str, dict[str, Any]]:
    """Build the ``[users.<id>]`` table from the user editor."""
    user_id = _text(form, "id", 64)
    if not _ID.match(user_id):
        raise FormInvalid(detail=f"the user id must be lower-case letters, digits, - or _, not {user_id!r}")
    table: dict[str, Any] = {"name": _text(form, "name") or user_id, "roles": _roles(form, "roles")}
    if _text(form, "token_profile"):
        table["token_profile"] = _text(form, "token_profile")
    for name in ("sign_from", "sign_until"):
        when = _when(form, name)
        if when is not None:
            table[name] = when
    return user_id, table
