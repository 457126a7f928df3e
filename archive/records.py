"""Request, job, job item and device records: plain functions over a connection.

The functions run inside the caller's transaction, so a record and its audit entry commit together
(see ``archive.api.ArchiveTransaction``). ``attributes`` is a JSON object for fields that only one
caller needs; ``update_*`` merges new attributes into the stored ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, insert, select, update

from archive.audit import utc_now
from archive.errors import RecordNotFound
from archive.schema import devices, job_items, jobs, requests

__all__ = ["RequestRecord", "JobRecord", "JobItemRecord", "DeviceRecord", "create_request", "update_request",
           "get_request", "list_requests", "create_job", "update_job", "get_job", "set_job_item", "get_job_items",
           "register_device", "update_device", "get_device", "list_devices"]


@dataclass(frozen=True)
class RequestRecord:
    """A signature request of the agent."""

    id: str
    created_at: str
    updated_at: str
    state: str
    template_id: str | None
    requester: str | None
    device_id: str | None
    file_name: str | None
    original_sha256: str | None
    signed_sha256: str | None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRecord:
    """A bulk sealing job."""

    id: str
    created_at: str
    updated_at: str
    state: str
    profile: str | None
    total: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobItemRecord:
    """The state of one document of a bulk job."""

    job_id: str
    item_key: str
    state: str
    input_sha256: str | None
    output_sha256: str | None
    error_code: str | None
    updated_at: str


@dataclass(frozen=True)
class DeviceRecord:
    """A paired phone or client. ``token_hash`` is a hash of its bearer token, never the token."""

    id: str
    name: str
    owner: str | None
    token_hash: str | None
    paired_at: str
    last_seen_at: str | None
    revoked_at: str | None
    attributes: dict[str, Any] = field(default_factory=dict)


def _row_to(record_type: type, row: Mapping[str, Any] | None) -> Any:
    if row is None:
        return None
    values = dict(row)
    if "attributes" in values:
        values["attributes"] = dict(values["attributes"] or {})
    return record_type(**values)


def create_request(connection: Connection, request_id: str, *, state: str, template_id: str | None = None,
                   requester: str | None = None, device_id: str | None = None, file_name: str | None = None,
                   original_sha256: str | None = None,
                   attributes: Mapping[str, Any] | None = None) -> RequestRecord:
    """Insert a request; ``original_sha256`` must name a stored document."""
    now = utc_now()
    connection.execute(insert(requests).values(
        id=request_id, created_at=now, updated_at=now, state=state, template_id=template_id,
        requester=requester, device_id=device_id, file_name=file_name, original_sha256=original_sha256,
        signed_sha256=None, attributes=dict(attributes or {})))
    return get_request(connection, request_id)


def get_request(connection: Connection, request_id: str) -> RequestRecord:
    """Return the request; raise ``RecordNotFound`` when there is none."""
    row = connection.execute(select(requests).where(requests.c.id == request_id)).mappings().first()
    if row is None:
        raise RecordNotFound(kind="request", id=request_id, ids={"request": request_id})
    return _row_to(RequestRecord, row)


def update_request(connection: Connection, request_id: str, *, state: str | None = None,
                   signed_sha256: str | None = None,
                   attributes: Mapping[str, Any] | None = None) -> RequestRecord:
    """Change a request's state, signed document or attributes (merged); return the new record."""
    current = get_request(connection, request_id)
    values: dict[str, Any] = {"updated_at": utc_now()}
    if state is not None:
        values["state"] = state
    if signed_sha256 is not None:
        values["signed_sha256"] = signed_sha256
    if attributes:
        values["attributes"] = {**current.attributes, **attributes}
    connection.execute(update(requests).where(requests.c.id == request_id).values(**values))
    return get_request(connection, request_id)


def create_job(connection: Connection, job_id: str, *, state: str, profile: str | None = None, total: int = 0,
               attributes: Mapping[str, Any] | None = None) -> JobRecord:
    now = utc_now()
    connection.execute(insert(jobs).values(id=job_id, created_at=now, updated_at=now, state=state,
                                           profile=profile, total=total, attributes=dict(attributes or {})))
    return get_job(connection, job_id)


def get_job(connection: Connection, job_id: str) -> JobRecord:
    """Return the job; raise ``RecordNotFound`` when there is none."""
    row = connection.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise RecordNotFound(kind="job", id=job_id, ids={"job": job_id})
    return _row_to(JobRecord, row)


def update_job(connection: Connection, job_id: str, *, state: str | None = None, total: int | None = None,
               attributes: Mapping[str, Any] | None = None) -> JobRecord:
    current = get_job(connection, job_id)
    values: dict[str, Any] = {"updated_at": utc_now()}
    if state is not None:
        values["state"] = state
    if total is not None:
        values["total"] = total
    if attributes:
        values["attributes"] = {**current.attributes, **attributes}
    connection.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
    return get_job(connection, job_id)


def set_job_item(connection: Connection, job_id: str, item_key: str, *, state: str,
                 input_sha256: str | None = None, output_sha256: str | None = None,
                 error_code: str | None = None) -> JobItemRecord:
    """Insert or update one item of a job; hashes already set are kept when given as None."""
    now = utc_now()
    key = (job_items.c.job_id == job_id) & (job_items.c.item_key == item_key)
    existing = connection.execute(select(job_items).where(key)).mappings().first()
    if existing is None:
        connection.execute(insert(job_items).values(
            job_id=job_id, item_key=item_key, state=state, input_sha256=input_sha256,
            output_sha256=output_sha256, error_code=error_code, updated_at=now))
    else:
        values: dict[str, Any] = {"state": state, "error_code": error_code, "updated_at": now}
        if input_sha256 is not None:
            values["input_sha256"] = input_sha256
        if output_sha256 is not None:
            values["output_sha256"] = output_sha256
        connection.execute(update(job_items).where(key).values(**values))
    return _row_to(JobItemRecord, connection.execute(select(job_items).where(key)).mappings().first())


def get_job_items(connection: Connection, job_id: str, state: str | None = None) -> list[JobItemRecord]:
    query = select(job_items).where(job_items.c.job_id == job_id).order_by(job_items.c.item_key)
    if state is not None:
        query = query.where(job_items.c.state == state)
    return [_row_to(JobItemRecord, row) for row in connection.execute(query).mappings()]


def register_device(connection: Connection, device_id: str, *, name: str, owner: str | None = None,
                    token_hash: str | None = None, attributes: Mapping[str, Any] | None = None) -> DeviceRecord:
    connection.execute(insert(devices).values(id=device_id, name=name, owner=owner, token_hash=token_hash,
                                              paired_at=utc_now(), attributes=dict(attributes or {})))
    return get_device(connection, device_id)


def get_device(connection: Connection, device_id: str) -> DeviceRecord:
    """Return the device; raise ``RecordNotFound`` when there is none."""
    row = connection.execute(select(devices).where(devices.c.id == device_id)).mappings().first()
    if row is None:
        raise RecordNotFound(kind="device", id=device_id, ids={"device": device_id})
    return _row_to(DeviceRecord, row)


def update_device(connection: Connection, device_id: str, *, seen: bool = False, revoked: bool = False,
                  token_hash: str | None = None, name: str | None = None,
                  attributes: Mapping[str, Any] | None = None) -> DeviceRecord:
    """Mark a device seen now or revoked now, replace its token hash or name, or merge attributes."""
    current = get_device(connection, device_id)
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = name
    now = utc_now()
    if seen:
        values["last_seen_at"] = now
    if revoked:
        values["revoked_at"] = now
    if token_hash is not None:
        values["token_hash"] = token_hash
    if attributes:
        values["attributes"] = {**current.attributes, **attributes}
    if values:
        connection.execute(update(devices).where(devices.c.id == device_id).values(**values))
    return get_device(connection, device_id)


def list_requests(connection: Connection, *, state: str | None = None, requester: str | None = None,
                  limit: int = 1000) -> list[RequestRecord]:
    """Return requests, newest first, optionally only those in ``state`` or made by ``requester``."""
    query = select(requests).order_by(requests.c.created_at.desc()).limit(limit)
    if state is not None:
        query = query.where(requests.c.state == state)
    if requester is not None:
        query = query.where(requests.c.requester == requester)
    return [_row_to(RequestRecord, row) for row in connection.execute(query).mappings()]


def list_devices(connection: Connection, include_revoked: bool = False) -> list[DeviceRecord]:
    query = select(devices).order_by(devices.c.paired_at)
    if not include_revoked:
        query = query.where(devices.c.revoked_at.is_(None))
    return [_row_to(DeviceRecord, row) for row in connection.execute(query).mappings()]
