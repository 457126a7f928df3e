"""The phone side of ``qsign demo``: the officer-signature job through the agent's API, over TLS.

The demo starts the agent in this process on 127.0.0.1 with TLS forced, finds it by zeroconf on the
loopback interface, and acts as three phones. Each phone pins the agent's certificate by its SHA-256
fingerprint. The operator's phone uploads the PDF, the reviewer's phone approves it, and the officer's
phone checks the preview and its SHA-256, signs with the PIN and downloads the result.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from qsign.config import Config
from qsign.errors import InvalidInput
from qsign.i18n import N_

__all__ = ["PhoneResult", "run_phone_flow", "OPERATOR", "REVIEWER", "OFFICER", "TEMPLATE"]

#: Users and template of the demo policy that ``qsign softhsm init`` writes.
OPERATOR = "operator-zhao"
REVIEWER = "reviewer-wang"
OFFICER = "officer-li"
TEMPLATE = "officer-signature"


@dataclass(frozen=True)
class PhoneResult:
    request_id: str
    signed: Path
    written: list[Path]
    agent_url: str


class _Phone:
    """One paired device: a bearer token and the agent's pinned certificate fingerprint."""

    def __init__(self, base_url: str, fingerprint: bytes) -> None:
        self.base_url = base_url
        self.ssl = aiohttp.Fingerprint(fingerprint)
        self.token = ""

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Accept-Language": "zh-CN"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.base_url + path, headers=headers, ssl=self.ssl,
                                       **kwargs) as response:
                body = await response.read()
                if response.status >= 400:
                    error = json.loads(body)
                    raise InvalidInput(N_("The agent returned {status} for {path}: {code} {message}"),
                                       status=response.status, path=path, code=error.get("code"),
                                       message=error.get("message"))
                return json.loads(body) if response.content_type == "application/json" else body


async def _follow_events(phone: _Phone, request_id: str, report: Callable[[str, dict[str, Any]], None]) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{phone.base_url}/api/v1/requests/{request_id}/events", ssl=phone.ssl,
                               headers={"Authorization": f"Bearer {phone.token}"}) as response:
            async for line in response.content:
                text = line.decode("utf-8").strip()
                if text.startswith("data: "):
                    event = json.loads(text[6:])
                    report(event["state"], event)
                    if event["state"] in ("signed", "failed"):
                        return


async def run_phone_flow(config: Config, source: Path, demo_dir: Path, out: Any) -> PhoneResult:
    """Start the agent, run the job through it as three phones, stop it; return the signed file's path."""
    from agent.discovery import discover
    from agent.pairing import create_pairing_code
    from agent.service import start_agent
    from agent.settings import load_agent_settings
    from token_drivers.pin import read_pin

    settings = load_agent_settings(config, "127.0.0.1:0")
    settings.tls_mode = "always"
    settings.name = "qsign-demo"
    out.step(N_("Starting the agent on 127.0.0.1 with TLS"))
    agent = await start_agent(config, settings)
    written = [agent.certificate.certificate_path, agent.certificate.key_path, agent.qr_png]
    try:
        out.step(N_("The agent serves {url}; certificate SHA-256 {fingerprint}"), url=agent.base_url,
                 fingerprint=agent.certificate.fingerprint)
        for path in written:
            out.path(path)

        fingerprint = bytes.fromhex(agent.certificate.fingerprint)
        found = await asyncio.to_thread(discover, 2.0, "127.0.0.1")
        advertised = [a for a in found if a.base_url == agent.base_url]
        if advertised and bytes.fromhex(advertised[0].fingerprint) == fingerprint:
            out.step(N_("Phone: found the agent by zeroconf; the advertised fingerprint matches"))
        else:
            out.step(N_("Phone: the agent was not found by zeroconf; using the printed URL and fingerprint"))

        phones = {}
        for user in (OPERATOR, REVIEWER, OFFICER):
            code = create_pairing_code(agent.workflow.archive, user, actor="demo")
            phone = _Phone(agent.base_url, fingerprint)
            paired = await phone.call("POST", "/api/v1/pairing",
                                      json={"code": code.code, "device_name": f"demo phone of {user}"})
            phone.token = paired["token"]
            phones[user] = phone
            out.step(N_("Phone of {user} paired over TLS (device {device})"), user=user, device=paired["device_id"])

        form = aiohttp.FormData()
        form.add_field("template_id", TEMPLATE)
        form.add_field("signer", OFFICER)
        form.add_field("file", source.read_bytes(), filename=source.name, content_type="application/pdf")
        created = await phones[OPERATOR].call("POST", "/api/v1/requests", data=form)
        request_id = created["id"]
        out.step(N_("Operator created request {request} for {signer}; SHA-256 {sha256}"), request=request_id,
                 signer=OFFICER, sha256=created["sha256"])

        approved = await phones[REVIEWER].call("POST", f"/api/v1/requests/{request_id}/approve",
                                               json={"comment": "demo"})
        out.step(N_("Reviewer approved request {request}; state {state}"), request=request_id, state=approved["state"])

        officer = phones[OFFICER]
        preview = demo_dir / f"{source.stem}.preview-page-1.png"
        preview.write_bytes(await officer.call("GET", f"/api/v1/requests/{request_id}/pages/1"))
        written.append(preview)
        local_sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
        if local_sha256 != created["sha256"]:
            raise InvalidInput(N_("The agent stored other bytes than the demo uploaded."))
        out.step(N_("Officer viewed the preview and confirms SHA-256 {sha256}"), sha256=created["sha256"])
        out.path(preview)

        pin = read_pin(config.tokens["officer"].pin_file, interactive=False)
        events = asyncio.create_task(_follow_events(
            officer, request_id, lambda state, event: out.step(N_("Progress: {state}"), state=state)))
        await asyncio.sleep(0.2)
        signed = await officer.call("POST", f"/api/v1/requests/{request_id}/sign",
                                    json={"pin": pin, "sha256": created["sha256"]})
        del pin
        await asyncio.wait_for(events, 30)
        out.step(N_("Officer signed request {request} with the SoftHSM2 officer token"), request=request_id)

        output = demo_dir / f"{source.stem}.officer-signed.pdf"
        data = await officer.call("GET", f"/api/v1/requests/{request_id}/signed")
        if hashlib.sha256(data).hexdigest() != signed["signed_sha256"]:
            raise InvalidInput(N_("The downloaded file does not match the signed document's SHA-256."))
        output.write_bytes(data)
        written.append(output)
        out.step(N_("Officer downloaded the signed PDF"))
        out.path(output)

        archive_settings = agent.workflow.archive.settings
        out.step(N_("The agent recorded the request, its audit entries and both documents in the archive"))
        for path in (Path(archive_settings.database_url.removeprefix("sqlite:///")), archive_settings.documents_dir):
            out.path(path)
        return PhoneResult(request_id, output, written, agent.base_url)
    finally:
        await agent.stop()
        out.step(N_("The agent has stopped."))
