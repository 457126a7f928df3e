"""Bulk sealing over the agent's API: ``POST /api/v1/batches`` and the routes of one batch.

An operator uploads PDF files or ``.zip`` archives of them with the name of a bulk profile. The agent
writes the upload under ``<state>/agent/batches/<batch>/in``, creates a bulk job (``hsm.pipeline``)
with its output in ``.../out`` and runs it in a background task of the agent's event loop. The job's
worker processes do the token work, so the loop stays free. Clients follow the job as server-sent
events, then download the manifest (JSON lines) and a zip of the sealed documents.

Every route needs a paired device whose user has the operator role.

NOTE: a batch that was running when the agent stopped is not restarted by the agent. The job is
resumable, and ``qsign bulk resume JOB`` finishes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.errors import RequestTooLarge
from agent.responses import SSE_KEEPALIVE
from archive.audit import AuditOutcome
from hsm.errors import JobNotFound, ProfileNotFound
from hsm.jobs import count_states, get_job, job_summary
from hsm.pipeline import Progress, create_job, stream_job, zip_results
from policies import PolicyDenied, Role
from qsign.errors import InvalidInput, QsignError
from qsign.i18n import N_

__all__ = ["BATCH_ROUTES", "BatchNotFinished"]

_logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"

_SAFE_NAME = re.compile(r"[^\w.\-]+")


class BatchNotFinished(QsignError):
    code = "batch_not_finished"
    message_template = N_("Batch {job} has not finished yet; wait for its 'finished' event.")
    http_status = 409


class BatchUploadInvalid(InvalidInput):
    code = "batch_upload_invalid"
    message_template = N_("The batch upload is invalid: {detail}")


@dataclass
class _BatchRun:
    """A job that this agent process runs: its latest progress, its end, and the event streams following it."""

    job_id: str
    latest: dict[str, Any] | None = None
    #: The last event ("finished" or "failed") once the job has ended.
    outcome: tuple[str, dict[str, Any]] | None = None
    listeners: set[asyncio.Queue] = field(default_factory=set)
    #: The task that runs the job, referenced here so that it is not garbage-collected while it runs.
    task: asyncio.Future | None = None

    def publish(self, name: str, data: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener.put_nowait((name, data))


BATCHES = web.AppKey("batches", dict)


def _runs(app: web.Application) -> dict[str, _BatchRun]:
    if BATCHES not in app:
        app[BATCHES] = {}
    return app[BATCHES]


def _operator(request: web.Request) -> Any:
    """Return the calling device's ``Caller``; raise ``Unauthorized`` or, without the operator role, ``PolicyDenied``."""
    from agent.server import WORKFLOW, _caller

    caller = _caller(request)
    if Role.OPERATOR not in caller.user.roles:
        workflow = request.app[WORKFLOW]
        workflow.archive.audit(caller.actor, "bulk.batch_denied", AuditOutcome.DENIED, device=caller.device_id,
                               reason="batches.operator_role",
                               object_ids={"path": request.path[:200], "rule": "batches.operator_role"})
        raise PolicyDenied("batches.operator_role", N_("user {user} does not have the operator role"),
                           user=caller.user.id)
    return caller


def _state_dir(request: web.Request) -> Path:
    from agent.server import WORKFLOW

    return request.app[WORKFLOW].settings.state_dir


def _job(request: web.Request) -> Any:
    from agent.server import WORKFLOW

    job_id = request.match_info["job_id"]
    if not re.fullmatch(r"[0-9A-Za-z-]{1,64}", job_id):
        raise JobNotFound(job=job_id[:64], ids={"job": job_id[:64]})
    return get_job(request.app[WORKFLOW].archive, job_id)


def _public_summary(archive: Any, job: Any) -> dict[str, Any]:
    """Return ``job_summary`` without the agent's own file paths, plus the download links."""
    summary = job_summary(job, count_states(archive, job.id))
    for private in ("out_dir", "manifest"):
        summary.pop(private, None)
    summary["links"] = {"events": f"{API_PREFIX}/batches/{job.id}/events",
                        "manifest": f"{API_PREFIX}/batches/{job.id}/manifest",
                        "results": f"{API_PREFIX}/batches/{job.id}/results"}
    return summary


async def _save_upload(request: web.Request, directory: Path, limit: int) -> tuple[str, list[Path]]:
    """Stream the multipart fields ``profile`` and ``file`` (one or more) to ``directory``."""
    if not request.content_type.startswith("multipart/"):
        raise BatchUploadInvalid(detail="send multipart/form-data with the fields profile and file")
    profile = ""
    files: list[Path] = []
    total = 0
    reader = await request.multipart()
    async for part in reader:
        if part.name == "profile":
            profile = (await part.text()).strip()[:100]
        elif part.name == "file":
            name = _SAFE_NAME.sub("_", Path(part.filename or "document.pdf").name)[:120].lstrip(".") or "document"
            path = directory / f"{len(files):04d}-{name}"
            with path.open("wb") as handle:
                while chunk := await part.read_chunk(1024 * 1024):
                    total += len(chunk)
                    if total > limit:
                        raise RequestTooLarge(limit=limit)
                    handle.write(chunk)
            files.append(path)
        else:
            raise BatchUploadInvalid(detail=f"unknown field {part.name!r}")
    if not profile:
        raise BatchUploadInvalid(detail="missing field 'profile'")
    if not files:
        raise BatchUploadInvalid(detail="missing field 'file'")
    return profile, files


async def _run(app: web.Application, run: _BatchRun, state_dir: Path) -> None:
    """Run the job to its end and publish its progress; the job stays resumable if the agent stops."""
    from agent.server import WORKFLOW

    archive = app[WORKFLOW].archive
    try:
        async for progress in stream_job(state_dir, run.job_id):
            run.latest = _progress_dict(progress)
            run.publish("progress", run.latest)
        run.outcome = ("finished", _public_summary(archive, get_job(archive, run.job_id)))
    except QsignError as error:
        _logger.warning("batch %s stopped: %s", run.job_id, error.code)
        run.outcome = ("failed", {"job": run.job_id, **error.to_dict("en")})
    except Exception:  # the job stays resumable with 'qsign bulk resume'; report it on the stream
        _logger.exception("batch %s failed", run.job_id)
        run.outcome = ("failed", {"job": run.job_id, "code": "internal_error", "message": "internal error"})
    run.publish(*run.outcome)


def _progress_dict(progress: Progress) -> dict[str, Any]:
    data = progress.to_dict()
    data["job"] = data.pop("job_id")
    return data


async def create_batch(request: web.Request) -> web.Response:
    from agent.server import WORKFLOW

    caller = _operator(request)
    workflow = request.app[WORKFLOW]
    state_dir = _state_dir(request)
    directory = workflow.settings.agent_dir / "batches" / secrets.token_hex(8)
    (directory / "in").mkdir(parents=True)
    try:
        profile, files = await _save_upload(request, directory / "in", workflow.settings.max_upload_bytes)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise

    try:
        job_id = await asyncio.to_thread(create_job, state_dir, files, profile, directory / "out",
                                         actor=caller.actor, config=workflow.config)
    except ProfileNotFound:
        shutil.rmtree(directory, ignore_errors=True)
        raise BatchUploadInvalid(detail=f"no bulk profile named {profile!r}; 'qsign bulk profiles' lists them") from None
    run = _BatchRun(job_id=job_id)
    _runs(request.app)[job_id] = run
    run.task = asyncio.ensure_future(_run(request.app, run, state_dir))
    _logger.info("batch %s started by %s with %d uploaded files (profile %s)", job_id, caller.actor, len(files),
                 profile)
    return web.json_response(_public_summary(workflow.archive, get_job(workflow.archive, job_id)), status=202)


async def get_batch(request: web.Request) -> web.Response:
    from agent.server import WORKFLOW

    _operator(request)
    job = _job(request)
    return web.json_response(_public_summary(request.app[WORKFLOW].archive, job))


async def batch_events(request: web.Request) -> web.StreamResponse:
    from agent.server import WORKFLOW

    _operator(request)
    job = _job(request)
    run = _runs(request.app).get(job.id)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Request-Id": request.get("request_id", "")})
    await response.prepare(request)
    if run is None:
        # Not run by this agent process (or run before it started): report the job's state as it is.
        name = "finished" if job.state == "finished" else "status"
        await _send(response, name, _public_summary(request.app[WORKFLOW].archive, job))
        return response

    queue: asyncio.Queue = asyncio.Queue()
    run.listeners.add(queue)
    try:
        if run.outcome is not None:
            await _send(response, *run.outcome)
            return response
        if run.latest is not None:
            await _send(response, "progress", run.latest)
        while True:
            try:
                name, data = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE)
            except asyncio.TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            await _send(response, name, data)
            if name in ("finished", "failed"):
                return response
    except (ConnectionResetError, asyncio.CancelledError):
        return response
    finally:
        run.listeners.discard(queue)


async def _send(response: web.StreamResponse, name: str, data: dict[str, Any]) -> None:
    payload = json.dumps(data, ensure_ascii=False)
    await response.write(f"event: {name}\ndata: {payload}\n\n".encode("utf-8"))


async def get_manifest(request: web.Request) -> web.StreamResponse:
    _operator(request)
    job = _job(request)
    manifest = job.attributes.get("manifest")
    if job.state != "finished" or not manifest:
        raise BatchNotFinished(job=job.id, ids={"job": job.id})
    return web.FileResponse(manifest, headers={
        "Content-Type": "application/x-ndjson",
        "Content-Disposition": f"attachment; filename=\"manifest-{job.id}.jsonl\""})


async def get_results(request: web.Request) -> web.StreamResponse:
    from agent.server import WORKFLOW

    _operator(request)
    job = _job(request)
    if job.state != "finished":
        raise BatchNotFinished(job=job.id, ids={"job": job.id})
    workflow = request.app[WORKFLOW]
    bundle = workflow.settings.agent_dir / "batches" / f"results-{job.id}.zip"
    if not bundle.exists():
        await asyncio.to_thread(zip_results, _state_dir(request), job.id, bundle, workflow.config)
    return web.FileResponse(bundle, headers={
        "Content-Type": "application/zip",
        "Content-Disposition": f"attachment; filename=\"results-{job.id}.zip\""})


#: The batch routes as (method, path, handler), appended to ``agent.server.API_ROUTES``.
BATCH_ROUTES: list[tuple[str, str, Any]] = [
    ("POST", f"{API_PREFIX}/batches", create_batch),
    ("GET", f"{API_PREFIX}/batches/{{job_id}}", get_batch),
    ("GET", f"{API_PREFIX}/batches/{{job_id}}/events", batch_events),
    ("GET", f"{API_PREFIX}/batches/{{job_id}}/manifest", get_manifest),
    ("GET", f"{API_PREFIX}/batches/{{job_id}}/results", get_results),
]
