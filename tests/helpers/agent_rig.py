"""An agent started as ``qsign agent serve`` on 127.0.0.1 in a subprocess, on a copy of the test state dir.

Each test module copies the session's SoftHSM2 state dir (tokens included), so it can change the
policy, the ``[agent]`` settings or the tokens without affecting other tests. It pairs devices
through ``agent.pairing`` on the same archive database the agent uses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import tomli_w

from agent.pairing import create_pairing_code
from archive.api import Archive

__all__ = ["copy_state", "AgentProcess", "Phone", "START_TIMEOUT"]

START_TIMEOUT = 60


def copy_state(source: Path, target: Path) -> Path:
    """Copy a state dir made by ``qsign softhsm init`` and point its SoftHSM2 config at the copied tokens."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("archive", "agent"))
    conf = target / "softhsm" / "softhsm2.conf"
    text = conf.read_text(encoding="utf-8").replace(str(source / "softhsm" / "tokens"),
                                                     str(target / "softhsm" / "tokens"))
    conf.write_text(text, encoding="utf-8")
    return target


def set_agent_config(state_dir: Path, **settings: Any) -> None:
    path = state_dir / "qsign.toml"
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    raw.setdefault("agent", {}).update(settings)
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")


@dataclass
class AgentProcess:
    state_dir: Path
    process: subprocess.Popen[str] | None = None
    base_url: str = ""
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.state_dir / "agent-test.log"

    def start(self, listen: str = "127.0.0.1:0") -> str:
        log = self.log_path.open("a", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qsign.cli", "agent", "serve", "--state-dir", str(self.state_dir),
             "--listen", listen, "--verbose", "--log-json"],
            stdout=subprocess.PIPE, stderr=log, text=True, encoding="utf-8", env=dict(os.environ))
        log.close()
        first = self.process.stdout.readline().strip()
        if not first.startswith("http"):
            self.stop()
            raise AssertionError(f"agent did not print its URL: {first!r}\n{self.log_path.read_text()[-3000:]}")
        self.base_url = first
        return first

    def stop(self, timeout: float = 40) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        finally:
            self.process.stdout.close()
        self.process = None
        return code

    def pair_code(self, user: str) -> str:
        with Archive.open(self.state_dir) as archive:
            return create_pairing_code(archive, user, actor="test").code


@dataclass
class Phone:
    """A paired device talking to the agent over HTTP."""

    base_url: str
    token: str = ""
    device_id: str = ""
    language: str = "en"
    ssl: Any = None

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept-Language": self.language}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    async def call(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                   headers: Mapping[str, str] | None = None) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.base_url + path, json=json_body, data=data,
                                       headers=self.headers(headers), ssl=self.ssl) as response:
                raw = await response.read()
                body: Any = raw
                if response.content_type == "application/json":
                    body = json.loads(raw)
                return response.status, body, response

    async def pair(self, code: str, name: str = "test phone") -> None:
        status, body, _ = await self.call("POST", "/api/v1/pairing", json_body={"code": code, "device_name": name})
        assert status == 201, body
        self.token = body["token"]
        self.device_id = body["device_id"]

    async def upload(self, content: bytes, *, template: str = "officer-signature", signer: str = "officer-li",
                     name: str = "doc.pdf", content_type: str = "application/pdf") -> tuple[int, Any]:
        form = aiohttp.FormData()
        form.add_field("template_id", template)
        form.add_field("signer", signer)
        form.add_field("file", content, filename=name, content_type=content_type)
        status, body, _ = await self.call("POST", "/api/v1/requests", data=form)
        return status, body

    async def events(self, request_id: str, until: set[str], timeout: float = 60) -> list[dict[str, Any]]:
        """Read the request's event stream until one of the ``until`` states arrives."""
        seen: list[dict[str, Any]] = []
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            async with session.get(f"{self.base_url}/api/v1/requests/{request_id}/events",
                                   headers=self.headers(), ssl=self.ssl) as response:
                assert response.status == 200
                async for line in response.content:
                    text = line.decode("utf-8").strip()
                    if text.startswith("data: "):
                        seen.append(json.loads(text[6:]))
                        if seen[-1]["state"] in until:
                            return seen
        return seen
