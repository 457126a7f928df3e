"""Running a bulk job: plan it, feed its documents to worker processes, record what they report.

This module is the in-process scheduler; the per-document state machine is in ``hsm.jobs`` and the
per-document work in ``hsm.sealer``. The scheduler is the only writer of the job's database rows:
it commits the outcomes that workers report in batches, each batch in one transaction together
with its document records and audit entries.

Library use (the agent's batch endpoint calls the same)::

    job_id = create_job(state_dir, [Path("in")], "seal", Path("out"))
    summary = run_job(state_dir, job_id, progress=print)   # blocks; resumable after any kill
    zip_results(state_dir, job_id, Path("results.zip"))

``stream_job`` runs a job from asyncio and yields ``Progress`` objects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import json
import logging
import multiprocessing
import os
import queue
import shutil
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from archive.api import Archive, DocumentKind
from archive.audit import AuditOutcome
from hsm import testhooks
from hsm.errors import JobRunning, NoInputs, OutputConflict, OutputExists, TokenLost, WorkerLost, WorkerStartFailed
from hsm.inputs import ZipLimits, collect_inputs
from hsm.jobs import (TERMINAL_STATES, ItemState, JobState, PlanEntry, count_states, get_job, job_dir, job_summary,
                      new_job_id, read_plan, write_plan)
from hsm.profiles import BulkProfile, get_profile
from hsm.sealer import ItemOutcome
from hsm.worker import worker_main
from qsign.config import Config, load_config

__all__ = ["Progress", "create_job", "run_job", "stream_job", "write_manifest", "zip_results", "CHUNK_SIZE"]

_logger = logging.getLogger(__name__)

#: Documents per chunk sent to a worker; a worker prepares a chunk, then signs its digests together.
CHUNK_SIZE = 8
#: Chunks queued per worker, so that a worker never waits for the scheduler.
CHUNKS_AHEAD = 2
#: The scheduler commits outcomes at least this often (seconds) or every FLUSH_EVENTS outcomes.
FLUSH_SECONDS = 0.25
FLUSH_EVENTS = 128
#: Seconds a resumed job waits for the workers of an earlier run to exit.
WORKER_EXIT_WAIT = 30.0


@dataclass
class Progress:
    """Progress of a running job; ``eta_seconds`` is None until a rate is known."""

    job_id: str
    total: int
    recorded: int
    failed: int
    rate: float
    eta_seconds: float | None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.recorded + self.failed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "done": self.done}


def _actor(job_attributes: dict[str, Any]) -> str:
    return str(job_attributes.get("actor") or "operator")


def create_job(state_dir: Path, inputs: Sequence[Path], profile_name: str, out_dir: Path, *,
               include: Sequence[str] = (), exclude: Sequence[str] = (), actor: str = "operator",
               config: Config | None = None) -> str:
    """Create a job in state ``planning`` and return its id; ``run_job`` plans and runs it.

    Raises ``ProfileNotFound``/``ProfileInvalid`` for the profile, before anything is written.
    """
    config = config or load_config(state_dir)
    get_profile(config, profile_name)
    job_id = new_job_id()
    job_dir(state_dir, job_id).mkdir(parents=True)
    attributes = {"inputs": [str(Path(p).absolute()) for p in inputs], "out_dir": str(Path(out_dir).absolute()),
                  "include": list(include), "exclude": list(exclude), "actor": actor}
    with Archive.open(state_dir, config) as archive, archive.transaction() as tx:
        tx.create_job(job_id, state=JobState.PLANNING.value, profile=profile_name, attributes=attributes)
        tx.audit(actor, "bulk.job_created", object_ids={"job_id": job_id, "profile": profile_name})
    _logger.info("created bulk job %s (profile %s)", job_id, profile_name)
    return job_id


def _plan(archive: Archive, state_dir: Path, job_id: str, profile: BulkProfile, attributes: dict[str, Any]) -> None:
    """Expand the inputs, write the plan and insert every item; then the job is ``ready``."""
    directory = job_dir(state_dir, job_id)
    extract_dir = directory / "extracted"
    shutil.rmtree(extract_dir, ignore_errors=True)
    out_dir = Path(attributes["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    planned, rejected = collect_inputs([Path(p) for p in attributes["inputs"]], out_dir, extract_dir,
                                       attributes.get("include", ()), attributes.get("exclude", ()), ZipLimits())
    if not planned and not rejected:
        raise NoInputs(ids={"job": job_id})

    entries: list[PlanEntry] = []
    failures: dict[str, tuple[str, str | None]] = {}
    seen_outputs: set[Path] = set()
    for item in planned:
        relative = item.output.parent / profile.output_file_name(item.output.name)
        output = out_dir.joinpath(*PurePosixPath(relative).parts)
        entries.append(PlanEntry(key=item.key, source=str(item.source), output=str(output)))
        if output in seen_outputs:
            failures[item.key] = (OutputConflict.code, None)
        elif output.exists() or output.is_symlink():
            failures[item.key] = (OutputExists.code, None)
        seen_outputs.add(output)
    for item in rejected:
        entries.append(PlanEntry(key=item.key, source=str(item.source) if item.source else None, output=None))
        failures[item.key] = (item.error_code, item.message)
    write_plan(directory, entries)

    actor = _actor(attributes)
    with archive.transaction() as tx:
        for entry in entries:
            code = failures.get(entry.key, (None, None))[0]
            tx.set_job_item(job_id, entry.key, state=ItemState.FAILED.value if code else ItemState.PENDING.value,
                            error_code=code)
            if code:
                tx.audit(actor, "bulk.document_failed", AuditOutcome.FAILURE, reason=code,
                         object_ids={"job_id": job_id, "item": entry.key})
        tx.update_job(job_id, state=JobState.READY.value, total=len(entries))
    testhooks.kill_point("after-plan", "parent")
    _logger.info("planned bulk job %s: %d documents, %d rejected", job_id, len(entries), len(failures))


@dataclass
class _Worker:
    index: int
    process: Any
    tasks: Any
    #: Chunks sent and not yet reported, oldest first.
    in_flight: collections.deque = field(default_factory=collections.deque)
    ready: bool = False


class _Scheduler:
    """Feeds chunks to workers and commits their outcomes; one instance per ``run_job`` call."""

    def __init__(self, archive: Archive, state_dir: Path, job_id: str, profile: BulkProfile, plan: dict[str, PlanEntry],
                 pending: list[str], workers: int, progress: Callable[[Progress], None] | None,
                 attributes: dict[str, Any], total: int, counts: dict[str, int]) -> None:
        self.archive = archive
        self.state_dir = state_dir
        self.job_id = job_id
        self.profile = profile
        self.plan = plan
        self.queue: collections.deque[str] = collections.deque(pending)
        self.remaining = set(pending)
        self.worker_count = max(1, min(workers, len(pending)))
        self.progress = progress
        self.actor = _actor(attributes)
        self.attributes = attributes
        self.total = total
        self.counts = counts
        self.lost: collections.Counter[str] = collections.Counter()
        self.context = multiprocessing.get_context("spawn")
        self.events = self.context.Queue()
        self.workers: dict[int, _Worker] = {}
        self.next_index = 0
        self.buffer: list[ItemOutcome] = []
        self.certificate: dict[str, str] | None = attributes.get("certificate")
        self.started = time.monotonic()
        self.done_this_run = 0
        directory = job_dir(state_dir, job_id)
        self.lock_path = str(directory / "workers.lock")
        self.partial_dir = Path(attributes["out_dir"]) / ".qsign-partial" / job_id
        self.partial_dir.mkdir(parents=True, exist_ok=True)

    def _start_worker(self) -> None:
        index = self.next_index
        self.next_index += 1
        tasks = self.context.Queue()
        process = self.context.Process(
            target=worker_main, name=f"qsign-bulk-{index}", daemon=True,
            args=(str(self.state_dir), self.profile.name, self.lock_path, tasks, self.events, os.getpid(), index,
                  logging.getLogger().getEffectiveLevel()))
        process.start()
        self.workers[index] = _Worker(index=index, process=process, tasks=tasks)
        _logger.info("started worker %d (pid %d) for job %s", index, process.pid, self.job_id)

    def _task(self, key: str) -> dict[str, str]:
        entry = self.plan[key]
        return {"key": key, "source": entry.source or "", "output": entry.output or "",
                "partial_dir": str(self.partial_dir)}

    def _dispatch(self) -> None:
        for worker in self.workers.values():
            while worker.ready and self.queue and len(worker.in_flight) < CHUNKS_AHEAD:
                chunk = [self.queue.popleft() for _ in range(min(CHUNK_SIZE, len(self.queue)))]
                worker.in_flight.append(chunk)
                worker.tasks.put([self._task(key) for key in chunk])

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind, index = event[0], event[1]
        worker = self.workers.get(index)
        if kind in ("fatal", "token_lost"):
            # Commit what the workers reported before, so that failed documents stay failed.
            self._flush()
            raise _WorkerFatal(event[2], event[3], token_lost=kind == "token_lost")
        if kind == "ready" and worker is not None:
            worker.ready = True
            if self.certificate is None:
                self.certificate = event[2]
                with self.archive.transaction() as tx:
                    tx.update_job(self.job_id, attributes={"certificate": self.certificate})
        elif kind == "outcomes":
            if worker is not None and worker.in_flight:
                worker.in_flight.popleft()
            self.buffer.extend(event[2])

    def _check_workers(self) -> None:
        for index, worker in list(self.workers.items()):
            if worker.process.exitcode is None:
                continue
            del self.workers[index]
            lost = [key for chunk in worker.in_flight for key in chunk]
            _logger.warning("worker %d of job %s ended with exit code %s; %d documents in flight",
                            index, self.job_id, worker.process.exitcode, len(lost))
            for key in lost:
                self.lost[key] += 1
                if self.lost[key] >= 2:
                    self.buffer.append(ItemOutcome(key=key, state="failed", error_code=WorkerLost.code,
                                                   error_message=WorkerLost(item=key).message("en")))
                else:
                    self.queue.appendleft(key)
            if self.remaining:
                self._start_worker()

    def _flush(self) -> None:
        outcomes = [outcome for outcome in self.buffer if outcome.key in self.remaining]
        self.buffer.clear()
        if not outcomes:
            return
        testhooks.kill_point("before-record", "parent")
        certificate = self.certificate or {}
        with self.archive.transaction() as tx:
            for outcome in outcomes:
                ids = {"job_id": self.job_id, "item": outcome.key, "profile": self.profile.name}
                if outcome.state == "written" and outcome.input is not None and outcome.output is not None:
                    tx.record_document(outcome.input, DocumentKind.ORIGINAL, media_type="application/pdf")
                    tx.record_document(outcome.output, DocumentKind.SIGNED, media_type="application/pdf")
                    tx.set_job_item(self.job_id, outcome.key, state=ItemState.RECORDED.value,
                                    input_sha256=outcome.input.sha256, output_sha256=outcome.output.sha256)
                    tx.audit(self.actor, "bulk.document_sealed",
                             object_ids={**ids, "key": self.profile.describe_key(),
                                         "certificate_serial": certificate.get("serial", "?"),
                                         "certificate_sha256": certificate.get("sha256", "?")},
                             document_hashes=[outcome.input.sha256, outcome.output.sha256])
                    self.counts[ItemState.RECORDED.value] += 1
                else:
                    input_sha256 = None
                    if outcome.input is not None:
                        # The worker stored the input before the document failed; record it, so that
                        # the stored file has its record.
                        tx.record_document(outcome.input, DocumentKind.ORIGINAL, media_type="application/pdf")
                        input_sha256 = outcome.input.sha256
                    tx.set_job_item(self.job_id, outcome.key, state=ItemState.FAILED.value,
                                    input_sha256=input_sha256, error_code=outcome.error_code or "signing_failed")
                    tx.audit(self.actor, "bulk.document_failed", AuditOutcome.FAILURE,
                             reason=outcome.error_code, object_ids=ids)
                    self.counts[ItemState.FAILED.value] += 1
                self.counts[ItemState.PENDING.value] -= 1
                self.remaining.discard(outcome.key)
                self.done_this_run += 1
        testhooks.kill_point("after-record", "parent")
        self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done_this_run / elapsed
        eta = len(self.remaining) / rate if rate > 0 else None
        self.progress(Progress(job_id=self.job_id, total=self.total, recorded=self.counts[ItemState.RECORDED.value],
                               failed=self.counts[ItemState.FAILED.value], rate=rate, eta_seconds=eta,
                               counts=dict(self.counts)))

    def run(self) -> None:
        self._report()
        for _ in range(self.worker_count):
            self._start_worker()
        last_flush = time.monotonic()
        try:
            while self.remaining:
                self._dispatch()
                try:
                    self._handle(self.events.get(timeout=0.05))
                    while True:
                        self._handle(self.events.get_nowait())
                except queue.Empty:
                    pass
                now = time.monotonic()
                if len(self.buffer) >= FLUSH_EVENTS or (self.buffer and now - last_flush >= FLUSH_SECONDS):
                    self._flush()
                    last_flush = now
                self._check_workers()
            self._flush()
        finally:
            self._stop_workers()

    def _stop_workers(self) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(Exception):
                worker.tasks.put(None)
        deadline = time.monotonic() + 10
        for worker in self.workers.values():
            worker.process.join(max(0.1, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()


class _WorkerFatal(Exception):
    def __init__(self, code: str, messages: dict[str, str], token_lost: bool = False) -> None:
        super().__init__(messages.get("en", code))
        self.code = code
        #: The worker's error message by language (``zh_CN``, ``en``).
        self.messages = messages
        self.token_lost = token_lost


@contextlib.contextmanager
def _job_lock(state_dir: Path, job_id: str):
    """Hold the job's exclusive lock, and wait until no worker of an earlier run is alive."""
    directory = job_dir(state_dir, job_id)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "job.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobRunning(job=job_id, ids={"job": job_id}) from None
        with open(directory / "workers.lock", "a") as workers_lock:
            deadline = time.monotonic() + WORKER_EXIT_WAIT
            while True:
                try:
                    fcntl.flock(workers_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise JobRunning(job=job_id, ids={"job": job_id}) from None
                    time.sleep(0.1)
            fcntl.flock(workers_lock, fcntl.LOCK_UN)
        yield


def run_job(state_dir: Path, job_id: str, *, progress: Callable[[Progress], None] | None = None,
            workers: int | None = None, config: Config | None = None) -> dict[str, Any]:
    """Plan (if needed) and run the job to its end, then write its manifest; return ``job_summary``.

    Safe to call again on a job that was killed at any point: documents already recorded are kept,
    outputs already published are taken over, and no document is signed into two outputs. Raises
    ``JobNotFound``, ``JobRunning`` (another process runs it), profile errors, and the worker's
    error when no worker can open the key.
    """
    config = config or load_config(state_dir)
    with _job_lock(state_dir, job_id), Archive.open(state_dir, config) as archive:
        job = get_job(archive, job_id)
        profile = get_profile(config, job.profile or "")
        if job.state == JobState.PLANNING.value:
            _plan(archive, state_dir, job_id, profile, job.attributes)
            job = get_job(archive, job_id)

        resumed = job.state != JobState.READY.value
        with archive.transaction() as tx:
            tx.update_job(job_id, state=JobState.RUNNING.value)
            tx.audit(_actor(job.attributes), "bulk.job_resumed" if resumed else "bulk.job_started",
                     object_ids={"job_id": job_id, "profile": profile.name})

        plan = read_plan(job_dir(state_dir, job_id))
        with archive.transaction() as tx:
            pending = [item.item_key for item in tx.get_job_items(job_id) if item.state not in TERMINAL_STATES]
        counts = count_states(archive, job_id)
        if pending:
            scheduler = _Scheduler(archive, state_dir, job_id, profile, plan, pending, workers or profile.workers,
                                   progress, job.attributes, job.total, counts)
            try:
                scheduler.run()
            except _WorkerFatal as fatal:
                if fatal.token_lost:
                    with archive.transaction() as tx:
                        tx.audit(_actor(job.attributes), "bulk.token_lost", AuditOutcome.FAILURE, reason=fatal.code,
                                 object_ids={"job_id": job_id, "profile": profile.name})
                    raise TokenLost(profile=profile.name, job=job_id, code=fatal.code,
                                    ids={"job": job_id, "profile": profile.name}) from None
                raise WorkerStartFailed(code=fatal.code, details=fatal.messages, ids={"job": job_id}) from None

        manifest = write_manifest(archive, job_id, plan, Path(job.attributes["out_dir"]))
        partial_root = Path(job.attributes["out_dir"]) / ".qsign-partial"
        shutil.rmtree(partial_root / job_id, ignore_errors=True)
        with contextlib.suppress(OSError):
            partial_root.rmdir()  # only when no other job of this directory left files there
        counts = count_states(archive, job_id)
        with archive.transaction() as tx:
            tx.update_job(job_id, state=JobState.FINISHED.value, attributes={"manifest": str(manifest)})
            tx.audit(_actor(job.attributes), "bulk.job_finished",
                     object_ids={"job_id": job_id, "recorded": counts["recorded"], "failed": counts["failed"]})
        _logger.info("bulk job %s finished: %s", job_id, counts)
        return job_summary(get_job(archive, job_id), counts)


def write_manifest(archive: Archive, job_id: str, plan: dict[str, PlanEntry], out_dir: Path) -> Path:
    """Write ``<out>/manifest-<job>.jsonl`` atomically from the job's records; return its path.

    One JSON object per line: item, input, input_sha256, output, output_sha256, status, error_code.
    ``output`` is set only for recorded documents.
    """
    path = out_dir / f"manifest-{job_id}.jsonl"
    temporary = out_dir / f".manifest-{job_id}.jsonl.tmp"
    with archive.transaction() as tx:
        items = tx.get_job_items(job_id)
    with temporary.open("w", encoding="utf-8") as handle:
        for item in items:
            entry = plan.get(item.item_key)
            recorded = item.state == ItemState.RECORDED.value
            handle.write(json.dumps({
                "item": item.item_key,
                "input": entry.source if entry else None,
                "input_sha256": item.input_sha256,
                "output": entry.output if entry and recorded else None,
                "output_sha256": item.output_sha256,
                "status": item.state,
                "error_code": item.error_code,
            }, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def zip_results(state_dir: Path, job_id: str, destination: Path, config: Config | None = None) -> Path:
    """Write a zip of the job's recorded outputs (by their paths under the output directory) and its manifest."""
    config = config or load_config(state_dir)
    with Archive.open(state_dir, config) as archive:
        job = get_job(archive, job_id)
        plan = read_plan(job_dir(state_dir, job_id))
        with archive.transaction() as tx:
            items = tx.get_job_items(job_id, state=ItemState.RECORDED.value)
    out_dir = Path(job.attributes["out_dir"])
    temporary = destination.with_name(f".{destination.name}.tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as bundle:
        for item in items:
            output = Path(plan[item.item_key].output or "")
            bundle.write(output, arcname=str(output.relative_to(out_dir)))
        manifest = job.attributes.get("manifest")
        if manifest and Path(manifest).exists():
            bundle.write(manifest, arcname=Path(manifest).name)
    os.replace(temporary, destination)
    return destination


async def stream_job(state_dir: Path, job_id: str, *, workers: int | None = None) -> AsyncIterator[Progress]:
    """Run the job in a thread and yield its progress; the last item is the final progress.

    Raises what ``run_job`` raises, after the progress already reported.
    """
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue[Progress | None] = asyncio.Queue()

    def report(progress: Progress) -> None:
        loop.call_soon_threadsafe(updates.put_nowait, progress)

    async def run() -> dict[str, Any]:
        try:
            return await asyncio.to_thread(run_job, state_dir, job_id, progress=report, workers=workers)
        finally:
            loop.call_soon_threadsafe(updates.put_nowait, None)

    task = asyncio.create_task(run())
    while (update := await updates.get()) is not None:
        yield update
    await task
