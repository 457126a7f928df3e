"""Responses that the API and the web pages send alike: a request's event stream and its signed file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.events import TERMINAL_STATES

__all__ = ["SSE_KEEPALIVE", "signed_file_response", "stream_request_events"]

#: Seconds between keep-alive comments on an idle event stream, so proxies keep the connection open.
SSE_KEEPALIVE = 15.0


async def _send_event(response: web.StreamResponse, data: dict[str, Any], event_name: str | None) -> None:
    payload = json.dumps(data, ensure_ascii=False)
    await response.write(f"event: {event_name or data['state']}\ndata: {payload}\n\n".encode("utf-8"))


async def stream_request_events(request: web.Request, workflow: Any, record: Any, *,
                                event_name: str | None = None,
                                headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Send a request's state history, then each new state, as server-sent events.

    The stream ends after a terminal state. Each event is named after its state unless ``event_name``
    fixes one name for all (the web pages listen for one name). ``record`` is the request as the caller
    may see it; reading it is where access is checked.
    """
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           **(headers or {})})
    await response.prepare(request)
    queue = workflow.events.subscribe(record.id)
    try:
        history = workflow.events.history(record.id)
        if not history:
            await _send_event(response, {"request_id": record.id, "state": record.state, "time": record.updated_at},
                              event_name)
        for event in history:
            await _send_event(response, event.to_dict(), event_name)
        if record.state in {state.value for state in TERMINAL_STATES}:
            return response

        while True:
            try:
                event = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE)
            except asyncio.TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            await _send_event(response, event.to_dict(), event_name)
            if event.state in TERMINAL_STATES:
                return response
    except (ConnectionResetError, asyncio.CancelledError):
        return response
    finally:
        workflow.events.unsubscribe(record.id, queue)


def signed_file_response(record: Any, data: bytes) -> web.Response:
    """Return the signed file of a request as a download: a PDF, or a detached ``.p7s``.

    The file name in ``Content-Disposition`` is reduced to ASCII, because HTTP headers carry Latin-1
    only and document names are often Chinese.
    """
    pades = record.attributes.get("signature", {}).get("format") == "pades"
    name = Path(record.file_name or "document").stem + (".signed.pdf" if pades else ".p7s")
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace("?", "_").replace('"', "_")
    return web.Response(body=data, content_type="application/pdf" if pades else "application/pkcs7-signature",
                        headers={"Content-Disposition": f"attachment; filename=\"{ascii_name}\"",
                                 "X-Content-SHA256": record.signed_sha256 or ""})
