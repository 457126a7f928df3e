"""Benchmark of the verification service: validations per second on one set of signed PDFs.

    python benchmarks/verify.py [--documents 40] [--workers 2] [--work DIR]

Signs ``--documents`` copies of the real PDFs of tests/data/real with pyHanko over a software test PKI
(tests/verify_pki.py), then measures on the same files, side by side:

- ``verify_file`` in a loop in this process (pyHanko validation plus qsign's report);
- ``verify_isolated``: the same, each validation in its own limited child process (what the CLI and the
  service do);
- the HTTP service: ``POST /api/v1/verify`` with ``--workers`` concurrent clients on 127.0.0.1, reports
  filed and audited;
- ``pyhanko sign validate`` run once per file (the pyhanko-cli command, a new process each time).

Every run must reach the same verdict for every file (TOTAL_PASSED; pyHanko's executive summary prints
"VALID"), or the benchmark stops.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

REAL_PDFS = sorted((ROOT / "tests" / "data" / "real").glob("*.pdf"))


def make_signed_pdfs(directory: Path, count: int):
    """Sign ``count`` PDFs (cycling over the real ones, each with its own field name); return the PKI."""
    from verify_pki import make_pki, sign_pdf_bytes

    pki = make_pki(directory / "pki")
    sources = [path.read_bytes() for path in REAL_PDFS]
    files = directory / "signed"
    files.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        data = sign_pdf_bytes(sources[number % len(sources)], pki.signer, field_name=f"Signature{number}")
        (files / f"signed-{number:04d}.pdf").write_bytes(data)
    return pki, sorted(files.glob("*.pdf"))


def rate(label: str, count: int, seconds: float, rows: list[tuple[str, float]]) -> None:
    per_second = count / seconds
    rows.append((label, per_second))
    print(f"  {label:<52} {per_second:8.2f} /s  ({seconds:.2f} s for {count})", flush=True)


def bench_in_process(files: list[Path], trust) -> float:
    from verify_service.validate import verify_file

    start = time.perf_counter()
    for path in files:
        report = verify_file(path, trust=trust)
        assert report.verdict == "TOTAL_PASSED", (path, report.to_json())
    return time.perf_counter() - start


def bench_isolated(files: list[Path], trust) -> float:
    from verify_service.sandbox import verify_isolated

    verify_isolated(files[0], trust=trust)  # start the forkserver outside the measurement
    start = time.perf_counter()
    for path in files:
        report = verify_isolated(path, trust=trust)
        assert report.verdict == "TOTAL_PASSED", path
    return time.perf_counter() - start


def bench_http(files: list[Path], pki, workers: int, directory: Path) -> float:
    import aiohttp
    from verify_pki import write_state_dir

    from qsign.config import load_config
    from verify_service.server import start_server
    from verify_service.settings import service_settings
    from verify_service.trust import trust_from_config

    state = write_state_dir(directory / "state", pki, f"\n[verify_service]\nworkers = {workers}\n")
    config = load_config(state)

    async def run() -> float:
        runner, url = await start_server(service_settings(config, trust_from_config(config)), "127.0.0.1", 0)
        queue: asyncio.Queue[Path] = asyncio.Queue()
        for path in files:
            queue.put_nowait(path)

        async def client(session: aiohttp.ClientSession) -> None:
            while not queue.empty():
                path = queue.get_nowait()
                async with session.post(f"{url}/api/v1/verify", data=path.read_bytes(),
                                        headers={"Content-Type": "application/pdf"}) as response:
                    body = await response.json()
                    assert body["verdict"] == "TOTAL_PASSED", body

        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{url}/api/v1/verify", data=files[0].read_bytes(),
                                        headers={"Content-Type": "application/pdf"}) as warm:
                    await warm.read()
                start = time.perf_counter()
                await asyncio.gather(*(client(session) for _ in range(workers)))
                return time.perf_counter() - start
        finally:
            await runner.cleanup()

    return asyncio.run(run())


def bench_pyhanko_cli(files: list[Path], pki) -> float:
    command = shutil.which("pyhanko", path=str(Path(sys.executable).parent)) or "pyhanko"
    start = time.perf_counter()
    for path in files:
        result = subprocess.run([command, "sign", "validate", "--trust", str(pki.root_pem), "--trust-replace",
                                 "--executive-summary", str(path)], capture_output=True, text=True, check=False)
        assert result.returncode == 0 and result.stdout.rstrip().endswith(":VALID"), \
            (path, result.stdout, result.stderr)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2, help="concurrent HTTP clients and service workers")
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    work = args.work or Path(tempfile.mkdtemp(prefix="qsign-bench-verify-"))
    print(f"verification benchmark: {args.documents} signed PDFs, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, work dir {work}")
    pki, files = make_signed_pdfs(work, args.documents)

    from verify_service.trust import trust_from_files

    trust = trust_from_files([pki.root_pem], [pki.intermediate_pem])
    rows: list[tuple[str, float]] = []
    rate("verify_file, in process", len(files), bench_in_process(files, trust), rows)
    rate("verify_isolated, one child process per file", len(files), bench_isolated(files, trust), rows)
    rate(f"HTTP POST /api/v1/verify, {args.workers} clients, filed + audited", len(files),
         bench_http(files, pki, args.workers, work), rows)
    rate("pyhanko sign validate, one process per file", len(files), bench_pyhanko_cli(files, pki), rows)

    baseline = rows[-1][1]
    print("\nratio to `pyhanko sign validate` per file:")
    for label, per_second in rows:
        print(f"  {label:<52} {per_second / baseline:6.2f}x")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
