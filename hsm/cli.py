"""``qsign bulk``: seal many documents with an HSM key (profiles, sign, resume, status, zip)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qsign.config import apply_environment, load_config, resolve_state_dir
from qsign.errors import InvalidInput, QsignError
from qsign.i18n import N_, translate

__all__ = ["register"]


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("bulk", parents=[common], help="seal many documents with an HSM key",
                                   description="Seal many PDF documents with the key of a bulk profile.")
    actions = parser.add_subparsers(dest="bulk_action", metavar="ACTION", required=True)

    profiles = actions.add_parser("profiles", parents=[common], help="list the bulk profiles and check each")
    profiles.add_argument("--json", action="store_true", help="print JSON instead of a table")
    profiles.set_defaults(handler=run_profiles)

    sign = actions.add_parser("sign", parents=[common], help="seal files, directories and .zip archives")
    sign.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="PDF file, directory or .zip archive")
    sign.add_argument("--profile", required=True, help="bulk profile ([profiles.NAME] in qsign.toml)")
    sign.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    sign.add_argument("--include", action="append", default=[], metavar="GLOB",
                      help="seal only files matching GLOB (relative path or name); repeatable")
    sign.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                      help="skip files matching GLOB; repeatable")
    sign.add_argument("--workers", type=int, metavar="N", help="worker processes (default: the profile's)")
    sign.add_argument("--json", action="store_true", help="print progress as JSON lines instead of a bar")
    sign.set_defaults(handler=run_sign)

    resume = actions.add_parser("resume", parents=[common], help="finish a job that was interrupted")
    resume.add_argument("job", nargs="?", help="job id")
    resume.add_argument("--last", action="store_true", help="the most recently created job")
    resume.add_argument("--workers", type=int, metavar="N", help="worker processes (default: the profile's)")
    resume.add_argument("--json", action="store_true", help="print progress as JSON lines instead of a bar")
    resume.set_defaults(handler=run_resume)

    status = actions.add_parser("status", parents=[common], help="show a job's document counts by state")
    status.add_argument("job", nargs="?", help="job id")
    status.add_argument("--last", action="store_true", help="the most recently created job")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=run_status)

    bundle = actions.add_parser("zip", parents=[common], help="write a zip of a job's outputs and manifest")
    bundle.add_argument("job", help="job id")
    bundle.add_argument("--out", required=True, type=Path, metavar="FILE", help="zip file to write")
    bundle.set_defaults(handler=run_zip)


def _config(args: argparse.Namespace) -> tuple[Path, Any]:
    state_dir = resolve_state_dir(args.state_dir)
    config = load_config(state_dir)
    apply_environment(config)
    return state_dir, config


class _ProgressPrinter:
    """A one-line bar on a terminal, a line every few seconds otherwise, or JSON lines with ``--json``."""

    def __init__(self, language: str, as_json: bool) -> None:
        self.language = language
        self.as_json = as_json
        self.terminal = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, progress: Any) -> None:
        if self.as_json:
            print(json.dumps({"progress": progress.to_dict()}, ensure_ascii=False), flush=True)
            return
        now = time.monotonic()
        finished = progress.done >= progress.total
        if not self.terminal and not finished and now - self.last < 5:
            return
        self.last = now
        width = 30
        filled = int(width * progress.done / progress.total) if progress.total else width
        eta = "?" if progress.eta_seconds is None else time.strftime("%H:%M:%S", time.gmtime(progress.eta_seconds))
        text = translate(N_("{done}/{total} done, {failed} failed, {rate} per second, {eta} left"), self.language,
                         done=progress.done, total=progress.total, failed=progress.failed,
                         rate=f"{progress.rate:.1f}", eta=eta)
        line = f"[{'#' * filled}{'-' * (width - filled)}] {text}"
        if self.terminal:
            print(f"\r{line}", end="\n" if finished else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


def _finish(args: argparse.Namespace, summary: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps({"result": summary}, ensure_ascii=False))
    else:
        counts = summary["counts"]
        print(translate(N_("Job {job}: {recorded} sealed, {failed} failed. Manifest: {manifest}"), args.language,
                        job=summary["job"], recorded=counts["recorded"], failed=counts["failed"],
                        manifest=summary["manifest"]))
    return 0 if summary["counts"]["failed"] == 0 else 1


def run_sign(args: argparse.Namespace) -> int:
    from hsm.pipeline import create_job, run_job

    state_dir, config = _config(args)
    job_id = create_job(state_dir, args.inputs, args.profile, args.out, include=args.include, exclude=args.exclude,
                        config=config)
    if args.json:
        print(json.dumps({"job": job_id}), flush=True)
    else:
        print(translate(N_("Job {job}"), args.language, job=job_id), flush=True)
    summary = run_job(state_dir, job_id, progress=_ProgressPrinter(args.language, args.json), workers=args.workers,
                      config=config)
    return _finish(args, summary)


def _job_id(args: argparse.Namespace, archive: Any) -> str:
    from hsm.jobs import last_job_id

    if args.job:
        return args.job
    if args.last:
        job_id = last_job_id(archive)
        if job_id:
            return job_id
    raise InvalidInput(N_("Name a job id or use --last (there must be a job)."))


def run_resume(args: argparse.Namespace) -> int:
    from archive.api import Archive
    from hsm.pipeline import run_job

    state_dir, config = _config(args)
    with Archive.open(state_dir, config) as archive:
        job_id = _job_id(args, archive)
    if args.json:
        print(json.dumps({"job": job_id}), flush=True)
    else:
        print(translate(N_("Job {job}"), args.language, job=job_id), flush=True)
    summary = run_job(state_dir, job_id, progress=_ProgressPrinter(args.language, args.json), workers=args.workers,
                      config=config)
    return _finish(args, summary)


def run_status(args: argparse.Namespace) -> int:
    from archive.api import Archive
    from hsm.jobs import count_states, get_job, job_summary

    state_dir, config = _config(args)
    with Archive.open(state_dir, config) as archive:
        job_id = _job_id(args, archive)
        summary = job_summary(get_job(archive, job_id), count_states(archive, job_id))
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    print(translate(N_("Job {job} ({state}), profile {profile}: {total} documents"), args.language,
                    job=summary["job"], state=summary["state"], profile=summary["profile"], total=summary["total"]))
    for state, count in summary["counts"].items():
        print(f"  {state:10} {count}")
    return 0


def run_zip(args: argparse.Namespace) -> int:
    from hsm.pipeline import zip_results

    state_dir, config = _config(args)
    path = zip_results(state_dir, args.job, args.out, config=config)
    print(path)
    return 0


def _check_profile(config: Any, profile: Any) -> dict[str, Any]:
    """Open the profile's key and check token, key, certificate, validity dates and key usage."""
    from token_drivers.keys import open_key
    from token_drivers.pin import read_pin

    result: dict[str, Any] = {"profile": profile.name, "key": profile.describe_key(), "workers": profile.workers,
                              "format": profile.format, "level": profile.level, "ok": False}
    try:
        pin = read_pin(profile.pin_file, pin_env=profile.pin_env or "QSIGN_PIN", interactive=False)
        with open_key(profile.module, pin=pin, token_label=profile.token_label, token_serial=profile.token_serial,
                      key_label=profile.key_label, key_id=profile.key_id) as key:
            certificate = key.certificate
            result["key_type"] = key.key_type
            result["certificate"] = certificate.subject.human_friendly
    except QsignError as error:
        result["error"] = {"code": error.code, "message": error.message("en")}
        return result

    now = datetime.now(timezone.utc)
    validity = certificate["tbs_certificate"]["validity"]
    not_before, not_after = validity["not_before"].native, validity["not_after"].native
    result["not_after"] = not_after.isoformat()
    problems = []
    if not not_before <= now <= not_after:
        problems.append("certificate_expired" if now > not_after else "certificate_not_yet_valid")
    usage = set(certificate.key_usage_value.native) if certificate.key_usage_value is not None else set()
    # NOTE: no [policies] rule set exists yet; until it does, the policy is the certificate's key usage.
    if usage and not usage & {"digital_signature", "non_repudiation"}:
        problems.append("key_usage_not_allowed")
    if profile.level != "B-B":
        from signing.tsa import TsaSettings

        if TsaSettings.from_config(config) is None:
            problems.append("tsa_not_configured")
    if problems:
        result["error"] = {"code": problems[0], "message": ", ".join(problems)}
    else:
        result["ok"] = True
    return result


def run_profiles(args: argparse.Namespace) -> int:
    from hsm.profiles import load_profiles

    _state_dir, config = _config(args)
    results = [_check_profile(config, profile) for profile in load_profiles(config).values()]
    if args.json:
        print(json.dumps({"profiles": results}, ensure_ascii=False))
    else:
        for result in results:
            status = translate(N_("OK"), args.language) if result["ok"] else result["error"]["code"]
            print(f"{result['profile']:16} {result['key']:28} {result.get('key_type', '?'):4} "
                  f"workers={result['workers']}  {status}")
            if result.get("certificate"):
                print(f"{'':16} {result['certificate']}")
    return 0 if all(result["ok"] for result in results) else 1
