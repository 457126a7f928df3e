"""Token wait and removal with SoftHSM2: the token directory is moved away and back under a running agent.

Moving ``softhsm/tokens/*`` away makes SoftHSM2 report no token after the agent re-initialises the
module, and makes a session that is open fail, which is what a USB token pulled out looks like to the
agent. ``pause_before_sign_seconds`` gives the test a moment between the ``signing`` event and the
call into the token.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from archive.api import Archive
from helpers.agent_rig import AgentProcess, Phone, copy_state, set_agent_config

DEMO_PDF = Path(__file__).parent / "data" / "real" / "xiaoshan-sample.pdf"
PIN = "123456"


class TokenShelf:
    """Moves every SoftHSM2 token directory out of the token dir and back."""

    def __init__(self, state_dir: Path) -> None:
        self.token_dir = state_dir / "softhsm" / "tokens"
        self.shelf = state_dir / "token-shelf"
        self.shelf.mkdir(exist_ok=True)

    def remove(self) -> None:
        for path in list(self.token_dir.iterdir()):
            shutil.move(str(path), self.shelf / path.name)

    def restore(self) -> None:
        for path in list(self.shelf.iterdir()):
            shutil.move(str(path), self.token_dir / path.name)


@pytest.fixture(scope="module")
def agent(softhsm_state, tmp_path_factory):
    state_dir = copy_state(softhsm_state, tmp_path_factory.mktemp("agent-token") / "state")
    set_agent_config(state_dir, advertise=False, token_wait_seconds=4, pause_before_sign_seconds=1.5,
                     sign_attempts_per_minute=50)
    process = AgentProcess(state_dir)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def phones(agent):
    async def pair_all():
        phones = {}
        for user in ("operator-zhao", "reviewer-wang", "officer-li"):
            phones[user] = Phone(agent.base_url)
            await phones[user].pair(agent.pair_code(user))
        return phones

    return asyncio.run(pair_all())


@pytest.fixture
def shelf(agent):
    tokens = TokenShelf(agent.state_dir)
    yield tokens
    tokens.restore()


async def _approved(phones):
    status, created = await phones["operator-zhao"].upload(DEMO_PDF.read_bytes())
    assert status == 201
    status, approved, _ = await phones["reviewer-wang"].call("POST", f"/api/v1/requests/{created['id']}/approve")
    assert approved["state"] == "approved"
    return approved


async def _sign(phone, request):
    return await phone.call("POST", f"/api/v1/requests/{request['id']}/sign",
                            json_body={"pin": PIN, "sha256": request["sha256"]})


async def _wait_for_event(phone, request_id, state, seen):
    """Collect events into ``seen`` until ``state`` arrives."""
    async for event in _stream(phone, request_id):
        seen.append(event["state"])
        if event["state"] == state:
            return


async def _stream(phone, request_id):
    import aiohttp
    import json

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{phone.base_url}/api/v1/requests/{request_id}/events",
                               headers=phone.headers()) as response:
            async for line in response.content:
                text = line.decode().strip()
                if text.startswith("data: "):
                    yield json.loads(text[6:])


async def test_token_inserted_while_waiting(phones, shelf):
    officer = phones["officer-li"]
    request = await _approved(phones)
    shelf.remove()
    seen: list[str] = []
    watcher = asyncio.create_task(_wait_for_event(officer, request["id"], "waiting_for_token", seen))
    signing = asyncio.create_task(_sign(officer, request))

    await asyncio.wait_for(watcher, 10)
    shelf.restore()
    status, body, _ = await asyncio.wait_for(signing, 30)

    assert status == 200, body
    assert body["state"] == "signed"
    after: list[str] = []
    await asyncio.wait_for(_wait_for_event(officer, request["id"], "signed", after), 10)
    assert after.index("waiting_for_token") < after.index("token_present") < after.index("signed")


async def test_token_wait_times_out(phones, shelf):
    officer = phones["officer-li"]
    request = await _approved(phones)
    shelf.remove()

    status, body, _ = await _sign(officer, request)

    assert status == 504
    assert body["code"] == "token_wait_timeout"
    status, after, _ = await officer.call("GET", f"/api/v1/requests/{request['id']}")
    assert (after["state"], after["error_code"]) == ("failed", "token_wait_timeout")


async def test_token_removed_mid_signature_then_retry(agent, phones, shelf):
    officer = phones["officer-li"]
    request = await _approved(phones)
    stored_before = len(list((agent.state_dir / "archive").rglob("*")))
    seen: list[str] = []
    watcher = asyncio.create_task(_wait_for_event(officer, request["id"], "signing", seen))
    signing = asyncio.create_task(_sign(officer, request))

    await asyncio.wait_for(watcher, 20)
    shelf.remove()
    status, body, _ = await asyncio.wait_for(signing, 30)

    assert status == 409, body
    assert body["code"] == "device_removed"
    status, failed, _ = await officer.call("GET", f"/api/v1/requests/{request['id']}")
    assert (failed["state"], failed["error_code"], failed["signed_sha256"]) == ("failed", "device_removed", None)
    assert list((agent.state_dir / "agent" / "work").iterdir()) == []
    assert len(list((agent.state_dir / "archive").rglob("*"))) == stored_before

    shelf.restore()
    status, body, _ = await _sign(officer, request)
    assert status == 200, body
    assert body["state"] == "signed"


async def test_sigterm_lets_signature_finish(agent, phones):
    officer = phones["officer-li"]
    request = await _approved(phones)
    seen: list[str] = []
    watcher = asyncio.create_task(_wait_for_event(officer, request["id"], "signing", seen))
    signing = asyncio.create_task(_sign(officer, request))
    await asyncio.wait_for(watcher, 20)

    exit_code = await asyncio.to_thread(agent.stop)
    status, body, _ = await signing

    assert exit_code == 0
    assert status == 200, body
    with Archive.open(agent.state_dir) as archive, archive.transaction() as tx:
        record = tx.get_request(request["id"])
    assert record.state == "signed"
    assert list((agent.state_dir / "agent" / "work").iterdir()) == []
