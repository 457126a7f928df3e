"""``POST /api/v1/batches`` over real HTTP on 127.0.0.1: an operator's phone starts a bulk job on the
SoftHSM2 seal key, follows it as server-sent events and downloads the manifest and the results.

The agent runs on a copy of the session's state dir, in a process of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import aiohttp
import pytest

from archive.api import Archive
from helpers.agent_rig import AgentProcess, Phone, copy_state, set_agent_config
from helpers.signing_checks import validate_pdf

REAL = Path(__file__).parent / "data" / "real"
SAMPLE = REAL / "xiaoshan-sample.pdf"


@pytest.fixture(scope="module")
def agent(softhsm_state, tmp_path_factory):
    state_dir = copy_state(softhsm_state, tmp_path_factory.mktemp("agent-batches") / "state")
    set_agent_config(state_dir, name=f"agent-batches-test-{os.getpid()}", max_upload_bytes=5_000_000)
    process = AgentProcess(state_dir)
    process.start()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def phones(agent):
    async def pair_all():
        result = {}
        for user in ("operator-zhao", "auditor-chen"):
            phone = Phone(agent.base_url)
            await phone.pair(agent.pair_code(user), name=f"phone of {user}")
            result[user] = phone
        return result

    return asyncio.run(pair_all())


def _batch_form(profile: str) -> aiohttp.FormData:
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("2026/notice.pdf", SAMPLE.read_bytes())
        archive.writestr("2026/letter.txt", "not a PDF")
    form = aiohttp.FormData()
    form.add_field("profile", profile)
    form.add_field("file", SAMPLE.read_bytes(), filename="notice.pdf", content_type="application/pdf")
    form.add_field("file", (REAL / "xtu.pdf").read_bytes(), filename="xtu.pdf", content_type="application/pdf")
    form.add_field("file", bundle.getvalue(), filename="batch.zip", content_type="application/zip")
    return form


async def _events(phone: Phone, job_id: str, timeout: float = 180) -> list[tuple[str, dict]]:
    """Read the job's event stream until its 'finished' or 'failed' event."""
    events: list[tuple[str, dict]] = []
    name = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.get(f"{phone.base_url}/api/v1/batches/{job_id}/events", headers=phone.headers()) as response:
            assert response.status == 200
            assert response.content_type == "text/event-stream"
            async for line in response.content:
                text = line.decode("utf-8").strip()
                if text.startswith("event: "):
                    name = text[7:]
                elif text.startswith("data: "):
                    events.append((name, json.loads(text[6:])))
                    if name in ("finished", "failed"):
                        break
    return events


async def test_batch_over_http(agent, phones, tmp_path):
    operator = phones["operator-zhao"]

    status, created, _ = await operator.call("POST", "/api/v1/batches", data=_batch_form("seal"))

    assert status == 202, created
    job_id = created["job"]
    assert created["profile"] == "seal"
    assert created["links"]["events"] == f"/api/v1/batches/{job_id}/events"
    assert "out_dir" not in created, "the agent's file paths stay private"

    events = await _events(operator, job_id)
    names = [name for name, _ in events]
    assert names[-1] == "finished", events
    assert "progress" in names
    finished = events[-1][1]
    assert finished["state"] == "finished"
    assert finished["counts"] == {"pending": 0, "recorded": 3, "failed": 1}

    status, body, _ = await operator.call("GET", f"/api/v1/batches/{job_id}")
    assert status == 200
    assert body["counts"] == finished["counts"]

    status, manifest_bytes, response = await operator.call("GET", f"/api/v1/batches/{job_id}/manifest")
    assert status == 200
    assert response.content_type == "application/x-ndjson"
    manifest = [json.loads(line) for line in manifest_bytes.decode("utf-8").splitlines()]
    codes = {Path(entry["item"]).name: entry["error_code"] for entry in manifest}
    assert codes == {"0000-notice.pdf": None, "0001-xtu.pdf": None, "notice.pdf": None, "letter.txt": "not_a_pdf"}

    status, results, response = await operator.call("GET", f"/api/v1/batches/{job_id}/results")
    assert status == 200
    assert response.content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(results)) as bundle:
        names = sorted(bundle.namelist())
        assert names == sorted([f"manifest-{job_id}.jsonl", "0000-notice.pdf", "0001-xtu.pdf",
                                "0002-batch/2026/notice.pdf"])
        bundle.extractall(tmp_path / "results")
    recorded = {entry["output_sha256"] for entry in manifest if entry["status"] == "recorded"}
    for name in names:
        if name.endswith(".pdf"):
            path = tmp_path / "results" / name
            statuses = await asyncio.to_thread(validate_pdf, path, agent.state_dir)
            assert len(statuses) == 1, name
            assert statuses[0].bottom_line, name
            assert hashlib.sha256(path.read_bytes()).hexdigest() in recorded

    with Archive.open(agent.state_dir) as archive:
        sealed = [entry for entry in archive.audit_entries(action="bulk.document_sealed")
                  if entry.object_ids.get("job_id") == job_id]
    assert len(sealed) == 3
    assert {entry.actor for entry in sealed} == {"user:operator-zhao"}


async def test_batch_needs_operator_role(agent, phones):
    auditor = phones["auditor-chen"]

    status, body, _ = await auditor.call("POST", "/api/v1/batches", data=_batch_form("seal"))

    assert status == 403, body
    assert body["code"] == "policy_denied"
    assert body["rule"] == "batches.operator_role"
    status, body, _ = await Phone(agent.base_url).call("GET", "/api/v1/batches/20260101T000000Z-00000000")
    assert status == 401, body


async def test_batch_errors(agent, phones):
    operator = phones["operator-zhao"]

    status, body, _ = await operator.call("POST", "/api/v1/batches", data=_batch_form("no-such-profile"))
    assert status == 400, body
    assert body["code"] == "batch_upload_invalid"

    status, body, _ = await operator.call("GET", "/api/v1/batches/20260101T000000Z-00000000")
    assert status == 404, body
    assert body["code"] == "job_not_found"

    oversized = aiohttp.FormData()
    oversized.add_field("profile", "seal")
    oversized.add_field("file", b"%PDF-1.7\n" + bytes(5_100_000), filename="big.pdf", content_type="application/pdf")
    status, body, _ = await operator.call("POST", "/api/v1/batches", data=oversized)
    assert status == 413, body
    assert body["code"] == "request_too_large"
    assert not any((agent.state_dir / "agent" / "batches").glob("*/in/*big.pdf")), "a rejected upload is removed"
