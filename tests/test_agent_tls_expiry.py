"""The agent with TLS forced on 127.0.0.1: fingerprint pinning, the QR code, and a template that expires."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from conftest import run_qsign
from helpers.agent_rig import AgentProcess, Phone, copy_state, set_agent_config

DEMO_PDF = Path(__file__).parent / "data" / "real" / "xiaoshan-sample.pdf"
#: Seconds from writing the policy until the short template expires: enough to start the agent,
#: pair three phones and create and approve one request.
WINDOW_SECONDS = 12


@pytest.fixture(scope="module")
def agent(softhsm_state, tmp_path_factory):
    state_dir = copy_state(softhsm_state, tmp_path_factory.mktemp("agent-tls") / "state")
    until = (datetime.now(timezone.utc) + timedelta(seconds=WINDOW_SECONDS)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with (state_dir / "policy.toml").open("a", encoding="utf-8") as policy:
        policy.write(f"""
[templates.short]
name_zh = "短期模板"
name_en = "Short-lived template"
required_approvals = 1
valid_until = {until}
""")
    set_agent_config(state_dir, advertise=True, name=f"agent-tls-test-{os.getpid()}", tls="always")
    process = AgentProcess(state_dir)
    process.start()
    process.fingerprint_line = process.process.stdout.readline().strip()
    process.expires = time.monotonic() + WINDOW_SECONDS - 3
    yield process
    process.stop()


def _fingerprint(agent) -> bytes:
    hex_pairs = agent.fingerprint_line.rsplit(" ", 1)[-1].replace("：", ":").split(":")[-32:]
    return bytes.fromhex("".join(hex_pairs))


def test_base_url_is_https(agent):
    assert agent.base_url.startswith("https://127.0.0.1:")


def test_fingerprint_qr_png_written(agent):
    qr = agent.state_dir / "agent" / "tls" / "fingerprint-qr.png"
    assert Image.open(qr).format == "PNG"


async def test_pinned_fingerprint_connects(agent):
    phone = Phone(agent.base_url, ssl=aiohttp.Fingerprint(_fingerprint(agent)))
    status, info, _ = await phone.call("GET", "/api/v1")

    assert status == 200
    assert info["scheme"] == "https"
    assert bytes.fromhex(info["tls_fingerprint_sha256"]) == _fingerprint(agent)


async def test_wrong_fingerprint_is_refused(agent):
    phone = Phone(agent.base_url, ssl=aiohttp.Fingerprint(bytes(32)))
    with pytest.raises(aiohttp.ServerFingerprintMismatch):
        await phone.call("GET", "/api/v1")


async def test_request_past_template_window_expires(agent):
    pin = aiohttp.Fingerprint(_fingerprint(agent))
    phones = {}
    for user in ("operator-zhao", "reviewer-wang", "officer-li"):
        phones[user] = Phone(agent.base_url, ssl=pin)
        await phones[user].pair(agent.pair_code(user))
    status, created = await phones["operator-zhao"].upload(DEMO_PDF.read_bytes(), template="short")
    assert status == 201, created
    assert time.monotonic() < agent.expires, "the agent took too long to start; raise WINDOW_SECONDS"
    status, approved, _ = await phones["reviewer-wang"].call("POST", f"/api/v1/requests/{created['id']}/approve")
    assert approved["state"] == "approved"

    await asyncio.sleep(max(0.0, agent.expires + 3.5 - time.monotonic()))
    status, denied, _ = await phones["officer-li"].call(
        "POST", f"/api/v1/requests/{created['id']}/sign", json_body={"pin": "123456", "sha256": created["sha256"]})

    assert status == 403
    assert denied["rule"] == "template.validity_window"
    status, after, _ = await phones["officer-li"].call("GET", f"/api/v1/requests/{created['id']}")
    assert after["state"] == "expired"
    assert after["signed_sha256"] is None
    events = await phones["officer-li"].events(created["id"], {"expired"}, timeout=10)
    assert events[-1]["state"] == "expired"


def _discovered(agent, attempts: int = 1) -> list[dict]:
    """Browse for 4 s, up to ``attempts`` times; multicast on loopback now and then drops a query."""
    for _ in range(attempts):
        completed = run_qsign("agent", "discover", "--interface", "127.0.0.1", "--timeout", "4", "--json")
        assert completed.returncode == 0, completed.stderr
        found = [item for item in json.loads(completed.stdout)["agents"] if item["base_url"] == agent.base_url]
        if found:
            return found
    return []


def test_advertisement_carries_fingerprint_and_is_withdrawn(agent):
    """Runs last in this module: it stops the agent."""
    found = _discovered(agent, attempts=2)
    assert len(found) == 1
    assert bytes.fromhex(found[0]["fingerprint"]) == _fingerprint(agent)
    assert (found[0]["api_path"], found[0]["scheme"]) == ("/api/v1", "https")

    assert agent.stop() == 0
    assert _discovered(agent) == []
