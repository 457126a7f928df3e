"""Benchmark of bulk sealing on the SoftHSM2 seal keys (RSA-3072 ``seal`` and P-384 ``seal_ec``).

    python benchmarks/bulk.py [--documents 1000] [--large-gb 1.0] [--workers 2] [--work DIR]

Makes a state dir with ``qsign softhsm init``, N small PDFs (the real PDFs of tests/data/real, each
copy made unique by an incremental update of its document information), and prints for each key:

- the raw PKCS#11 signing rate of the key with ``--workers`` processes (each its own session);
- a plain loop over ``signing.pades.sign_pdf`` (pyHanko) in one process;
- the ``hsm`` pipeline's documents per second (``run_job``, including the archive records), and
  its ratios to both.

Then it makes one PDF of ``--large-gb`` GB (a page plus one incompressible stream) and compares the
pipeline's time for it with ``sha256sum`` of the same file. That phase runs in a process of its own
(``--large-phase``), so the scheduler's peak RSS is its own, and it reads each worker's peak RSS
(``VmHWM`` in ``/proc/PID/status``) while the worker runs.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import platform
import shutil
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REAL_PDFS = sorted((ROOT / "tests" / "data" / "real").glob("*.pdf"))
SMALL_PDF = ROOT / "tests" / "data" / "real" / "xiaoshan-sample.pdf"


def make_small_pdfs(directory: Path, count: int) -> None:
    """Write ``count`` PDFs: copies of the real PDFs, each with its own title in an incremental update."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    directory.mkdir(parents=True, exist_ok=True)
    sources = [path.read_bytes() for path in REAL_PDFS]
    # Mostly the one-page notice, like a batch of tax notices, with the other real PDFs mixed in.
    weights = [SMALL_PDF.read_bytes()] * 7 + sources
    for number in range(count):
        source = weights[number % len(weights)]
        writer = IncrementalPdfFileWriter(io.BytesIO(source), strict=False)
        info = writer.trailer["/Info"].get_object() if "/Info" in writer.trailer else generic.DictionaryObject()
        info[generic.NameObject("/Title")] = generic.TextStringObject(f"税务事项通知书 第{number:05d}号")
        if "/Info" in writer.trailer:
            writer.update_container(info)
        else:
            writer.set_info(info)
        output = io.BytesIO()
        writer.write(output)
        (directory / f"notice-{number:05d}.pdf").write_bytes(output.getvalue())


def make_large_pdf(path: Path, size: int) -> None:
    """Write a one-page PDF with one stream of ``size`` random bytes (not referenced by the page)."""
    chunk = 16 * 1024 * 1024
    with path.open("wb") as handle:
        offsets = []
        handle.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
        objects = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
            b"<< /Length 44 >>\nstream\nBT /F1 12 Tf 72 712 Td (large) Tj ET\nendstream",
        ]
        for number, body in enumerate(objects, start=1):
            offsets.append(handle.tell())
            handle.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
        offsets.append(handle.tell())
        handle.write(b"5 0 obj\n<< /Length %d >>\nstream\n" % size)
        remaining = size
        while remaining:
            block = os.urandom(min(chunk, remaining))
            handle.write(block)
            remaining -= len(block)
        handle.write(b"\nendstream\nendobj\n")
        xref = handle.tell()
        handle.write(b"xref\n0 6\n0000000000 65535 f \n")
        for offset in offsets:
            handle.write(b"%010d 00000 n \n" % offset)
        handle.write(b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref)


def _raw_worker(state_dir: str, profile: str, seconds: float, results: multiprocessing.Queue) -> None:
    from qsign.config import apply_environment, load_config
    from token_drivers.keys import open_profile_key

    config = load_config(Path(state_dir))
    apply_environment(config)
    with open_profile_key(config, profile) as key:
        data = b"\x31" + bytes(200)
        key.sign(data)
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            key.sign(data)
            count += 1
        results.put(count / (time.perf_counter() - started))


def raw_rate(state_dir: Path, profile: str, processes: int, seconds: float = 5.0) -> float:
    """Return signatures per second of ``processes`` processes signing at once, each in its own session."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_raw_worker, args=(str(state_dir), profile, seconds, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    rates = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    return sum(rates)


def plain_loop_rate(state_dir: Path, token_profile: str, inputs: list[Path], out_dir: Path) -> float:
    """Return documents per second of ``sign_pdf`` (pyHanko's signing API) in a loop in this process."""
    from qsign.config import apply_environment, load_config
    from signing.pades import sign_pdf
    from signing.pkcs11_signer import TokenSigner, load_chain
    from token_drivers.keys import open_profile_key

    config = load_config(state_dir)
    apply_environment(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_profile_key(config, token_profile) as key:
        signer = TokenSigner(key, chain=load_chain(config))
        started = time.perf_counter()
        for path in inputs:
            sign_pdf(signer, path, out_dir / path.name)
        return len(inputs) / (time.perf_counter() - started)


def pipeline_run(state_dir: Path, profile: str, inputs: list[Path], out_dir: Path, workers: int) -> tuple[float, dict]:
    """Run one bulk job over ``inputs``; return (seconds, summary)."""
    from hsm.pipeline import create_job, run_job

    started = time.perf_counter()
    job_id = create_job(state_dir, inputs, profile, out_dir)
    summary = run_job(state_dir, job_id, workers=workers)
    return time.perf_counter() - started, summary


def _peak_rss_kb(status: str) -> int:
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmHWM"].split()[0]) if "VmHWM" in fields else 0


def _worker_peaks(parent: int) -> dict[int, int]:
    """Return the ``VmHWM`` (kB) of each live bulk worker (a spawned child of ``parent``) by PID."""
    peaks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("PPid", "0")) != parent or b"spawn_main" not in command or "VmHWM" not in fields:
            continue
        peaks[int(entry.name)] = int(fields["VmHWM"].split()[0])
    return peaks


def large_phase(state_dir: Path, large: Path, out_dir: Path) -> dict[str, float]:
    """Time ``sha256sum`` and a one-worker job on ``large``; return the times and peak RSS figures (MB)."""
    from qsign.config import apply_environment, load_config

    apply_environment(load_config(state_dir))
    subprocess.run(["cat", str(large)], stdout=subprocess.DEVNULL, check=True)  # same page cache state for both
    started = time.perf_counter()
    subprocess.run(["sha256sum", str(large)], check=True, capture_output=True)
    sha_seconds = time.perf_counter() - started

    peaks: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid, peak in _worker_peaks(os.getpid()).items():
                peaks[pid] = max(peak, peaks.get(pid, 0))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds, summary = pipeline_run(state_dir, "seal", [large], out_dir, 1)
    done.set()
    sampler.join()
    return {"sha256sum_seconds": sha_seconds, "pipeline_seconds": seconds,
            "recorded": summary["counts"]["recorded"],
            "worker_peak_rss_mb": max(peaks.values(), default=0) / 1024,
            # VmHWM, not ru_maxrss: Linux keeps in ru_maxrss the RSS of the benchmark process that
            # forked this one before the exec.
            "scheduler_peak_rss_mb": _peak_rss_kb(Path("/proc/self/status").read_text()) / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--plain-documents", type=int, default=200,
                        help="documents in the plain sign_pdf loop (its rate does not depend on N)")
    parser.add_argument("--large-gb", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary directory, removed)")
    parser.add_argument("--large-phase", nargs=3, type=Path, metavar=("STATE", "PDF", "OUT"),
                        help=argparse.SUPPRESS)  # internal: the large-file phase in its own process
    args = parser.parse_args()
    if args.large_phase:
        print(json.dumps(large_phase(*args.large_phase)))
        return 0

    work = args.work or Path(tempfile.mkdtemp(prefix="qsign-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    state_dir = work / "state"
    subprocess.run([sys.executable, "-m", "qsign.cli", "softhsm", "init", "--state-dir", str(state_dir)],
                   check=True, capture_output=True)
    from qsign.config import apply_environment, load_config
    apply_environment(load_config(state_dir))

    small = work / "small"
    make_small_pdfs(small, args.documents)
    inputs = sorted(small.glob("*.pdf"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.platform()}")
    print(f"documents: {len(inputs)} PDFs, {sum(p.stat().st_size for p in inputs) / len(inputs) / 1024:.0f} KiB "
          f"on average; workers: {args.workers}\n")

    print("| key | raw PKCS#11 signatures/s | plain sign_pdf loop docs/s | pipeline docs/s | "
          "pipeline / plain loop | pipeline / raw |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for profile, label in (("seal", "RSA-3072"), ("seal_ec", "EC P-384")):
        raw = raw_rate(state_dir, profile, args.workers)
        plain = plain_loop_rate(state_dir, profile, inputs[:args.plain_documents], work / f"plain-{profile}")
        seconds, summary = pipeline_run(state_dir, profile, inputs, work / f"out-{profile}", args.workers)
        recorded = summary["counts"]["recorded"]
        rate = recorded / seconds
        print(f"| {label} | {raw:,.0f} | {plain:.1f} | {rate:.1f} | {rate / plain:.2f}× | {rate / raw:.1%} |",
              flush=True)
        shutil.rmtree(work / f"plain-{profile}", ignore_errors=True)

    large = work / "large" / "large.pdf"
    large.parent.mkdir(parents=True, exist_ok=True)
    make_large_pdf(large, int(args.large_gb * 1024 ** 3))
    size_gb = large.stat().st_size / 1024 ** 3
    completed = subprocess.run([sys.executable, __file__, "--large-phase", str(state_dir), str(large),
                                str(work / "out-large")], check=True, capture_output=True, text=True)
    result = json.loads(completed.stdout.splitlines()[-1])
    sha_seconds, seconds = result["sha256sum_seconds"], result["pipeline_seconds"]
    print(f"\nlarge PDF: {size_gb:.2f} GiB, recorded: {result['recorded']}")
    print("| sha256sum s | pipeline s | pipeline / sha256sum | peak RSS of the worker MB | "
          "peak RSS of the scheduler MB |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {sha_seconds:.2f} | {seconds:.2f} | {seconds / sha_seconds:.2f}× | {result['worker_peak_rss_mb']:.0f} "
          f"| {result['scheduler_peak_rss_mb']:.0f} |")

    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
