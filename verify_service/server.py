"""The verification HTTP service (aiohttp): upload a PDF or a CMS signature, get the JSON report.

Endpoints:

- ``POST /api/v1/verify``: either ``multipart/form-data`` with a ``file`` part and, for a detached CMS
  signature, a ``content`` part; or the raw file as the body with ``Content-Type: application/pdf`` (or
  ``application/pkcs7-signature``, ``application/octet-stream``). Returns the report that
  ``qsign verify FILE --json`` prints, with status 200 whatever the verdict.
- ``GET /healthz``: ``{"status": "ok"}``.

Errors are ``{"code", "message", "request_id"}`` with the message in the language of ``Accept-Language``
(zh-CN or en). Validation runs in worker threads, so the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import signal
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import unquote

from aiohttp import BodyPartReader, web

from qsign import __version__
from qsign.errors import QsignError
from qsign.i18n import N_, negotiate_language
from verify_service.errors import ListenFailed, UploadInvalid, UploadTooLarge
from verify_service.settings import ServiceSettings, parse_listen
from verify_service.sandbox import Limits, verify_isolated

__all__ = ["create_app", "serve", "start_server"]

_logger = logging.getLogger(__name__)

_SETTINGS = web.AppKey("settings", ServiceSettings)
#: Id of the request being handled, for log lines and error bodies. A context variable gives each
#: request task its own value.
_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)

#: Content types accepted as a raw request body, and the file name used when the request names none.
_RAW_TYPES = {
    "application/pdf": "upload.pdf",
    "application/pkcs7-signature": "upload.p7s",
    "application/pkcs7-mime": "upload.p7m",
    "application/cms": "upload.p7s",
    "application/octet-stream": "upload.bin",
}
_FORM_FIELDS = ("file", "content")
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


async def _save_multipart(request: web.Request, directory: Path,
                          budget: _UploadBudget) -> dict[str, tuple[Path, str]]:
    saved: dict[str, tuple[Path, str]] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise UploadInvalid(detail="nested multipart bodies are not supported")
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


async def _handle_verify(request: web.Request) -> web.Response:
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

        file_path, file_name = saved["file"]
        content_path, content_name = saved.get("content", (None, None))
        _logger.info("request %s: verifying upload %s", _REQUEST_ID.get(), file_name)
        loop = asyncio.get_running_loop()
        limits = Limits(timeout_seconds=settings.timeout_seconds, memory_mb=settings.memory_mb)
        report = await loop.run_in_executor(
            request.app[_EXECUTOR],
            lambda: verify_isolated(file_path, content_path, settings.trust, name=file_name,
                                    content_name=content_name, policy=settings.policy, limits=limits),
        )
    return web.json_response(report.to_dict(), dumps=_dumps)


async def _handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "qsign_version": __version__})


def create_app(settings: ServiceSettings) -> web.Application:
    """Build the aiohttp application; the caller runs it (``start_server`` does)."""
    # aiohttp's own limit applies only to request.read()/post(); the handlers count streamed bytes too.
    app = web.Application(middlewares=[_request_middleware], client_max_size=settings.max_upload_bytes)
    app[_SETTINGS] = settings
    app[_EXECUTOR] = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="qsign-verify")

    async def _shutdown_executor(app: web.Application) -> None:
        app[_EXECUTOR].shutdown(wait=True, cancel_futures=True)

    app.on_cleanup.append(_shutdown_executor)
    app.router.add_post("/api/v1/verify", _handle_verify)
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
