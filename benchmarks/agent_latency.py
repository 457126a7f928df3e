"""Agent API latency with concurrent clients on loopback: p50/p99 per endpoint and requests/s.

Makes a state dir with ``qsign softhsm init``, adds one operator per client to its policy, starts
``qsign agent serve`` on 127.0.0.1 in a subprocess and pairs one device per client. Each client then
repeats: create a request (upload a one-page PDF), read it, poll its state through the list of its own
requests, and read ``/healthz``. ``/healthz`` does no database work and no authentication, so its row
is the floor that the HTTP stack and the event loop set. The ratio column compares each endpoint with it.

    python benchmarks/agent_latency.py --clients 50 --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import pypdfium2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from agent.pairing import create_pairing_code  # noqa: E402
from archive.api import Archive  # noqa: E402
from helpers.agent_rig import AgentProcess, set_agent_config  # noqa: E402


def _one_page_pdf() -> bytes:
    document = pypdfium2.PdfDocument.new()
    document.new_page(595, 842)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _prepare_state(work: Path, clients: int) -> Path:
    state_dir = work / "state"
    subprocess.run([sys.executable, "-m", "qsign.cli", "softhsm", "init", "--state-dir", str(state_dir)],
                   check=True, capture_output=True)
    with (state_dir / "policy.toml").open("a", encoding="utf-8") as policy:
        for number in range(clients):
            policy.write(f'\n[users.bench-{number}]\nname = "bench {number}"\nroles = ["operator"]\n')
    set_agent_config(state_dir, advertise=False)
    return state_dir


def _pair(state_dir: Path, clients: int) -> list[str]:
    return [create_pairing_code(Archive.open(state_dir), f"bench-{number}").code for number in range(clients)]


async def _timed(session: aiohttp.ClientSession, timings: dict[str, list[float]], name: str, method: str,
                 url: str, expected: int, **kwargs) -> dict | None:
    start = time.perf_counter()
    async with session.request(method, url, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else None
        elapsed = time.perf_counter() - start
    if response.status != expected:
        raise RuntimeError(f"{name}: HTTP {response.status} {body}")
    timings[name].append(elapsed)
    return body


async def _client(base_url: str, code: str, pdf: bytes, rounds: int, timings: dict[str, list[float]],
                  start: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/api/v1/pairing", json={"code": code, "device_name": "bench"}) as r:
            token = (await r.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}
        await start.wait()
        for _ in range(rounds):
            form = aiohttp.FormData()
            form.add_field("template_id", "officer-signature")
            form.add_field("signer", "officer-li")
            form.add_field("file", pdf, filename="bench.pdf", content_type="application/pdf")
            created = await _timed(session, timings, "POST /api/v1/requests", "POST", f"{base_url}/api/v1/requests",
                                   201, data=form, headers=headers)
            await _timed(session, timings, "GET /api/v1/requests/{id}", "GET",
                         f"{base_url}/api/v1/requests/{created['id']}", 200, headers=headers)
            await _timed(session, timings, "GET /api/v1/requests?view=mine", "GET",
                         f"{base_url}/api/v1/requests?view=mine", 200, headers=headers)
            await _timed(session, timings, "GET /healthz", "GET", f"{base_url}/healthz", 200)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def _run(base_url: str, codes: list[str], rounds: int) -> tuple[dict[str, list[float]], float]:
    timings: dict[str, list[float]] = defaultdict(list)
    pdf = _one_page_pdf()
    start = asyncio.Event()
    tasks = [asyncio.create_task(_client(base_url, code, pdf, rounds, timings, start)) for code in codes]
    await asyncio.sleep(1.0)
    began = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    return timings, time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default: 50)")
    parser.add_argument("--rounds", type=int, default=20, help="create/read/poll rounds per client (default: 20)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qsign-agent-bench-") as work:
        state_dir = _prepare_state(Path(work), args.clients)
        agent = AgentProcess(state_dir)
        agent.start()
        try:
            codes = _pair(state_dir, args.clients)
            timings, elapsed = asyncio.run(_run(agent.base_url, codes, args.rounds))
        finally:
            agent.stop()

    total = sum(len(values) for values in timings.values())
    floor = statistics.median(timings["GET /healthz"])
    print(f"{args.clients} clients x {args.rounds} rounds on {platform.node()} ({os.cpu_count()} CPUs), "
          f"Python {platform.python_version()}")
    print(f"{'endpoint':34} {'count':>6} {'p50 ms':>8} {'p99 ms':>8} {'p50 / healthz':>14}")
    for name, values in timings.items():
        p50 = statistics.median(values)
        print(f"{name:34} {len(values):6d} {p50 * 1000:8.1f} {_percentile(values, 0.99) * 1000:8.1f} "
              f"{p50 / floor:13.1f}x")
    print(f"total {total} requests in {elapsed:.1f} s: {total / elapsed:.0f} requests/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
