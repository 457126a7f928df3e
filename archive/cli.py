"""``qsign archive``: verify, back up, restore, prune and look up the archive.

Every command takes ``--state-dir`` and ``--json``. ``verify`` exits 0 only when every check passes
and 1 otherwise. The other commands exit 0 on success and with the error's exit code on failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from qsign.config import apply_environment, load_config, resolve_state_dir
from qsign.i18n import N_, translate

__all__ = ["register"]

_logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``qsign archive`` and its commands."""
    parser = subparsers.add_parser("archive", help="verify, back up, restore, prune and search the archive")
    commands = parser.add_subparsers(dest="archive_command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        command = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        command.add_argument("--json", action="store_true", help="print the result as JSON")
        command.set_defaults(handler=handler)
        return command

    add("verify", "check every document hash, the audit chain and the signed checkpoints", _verify)

    backup = add("backup", "write a signed backup of the database and documents to one tar file", _backup)
    backup.add_argument("--to", required=True, metavar="FILE", help="backup file to write")

    restore = add("restore", "check a backup and restore it into an empty state directory", _restore)
    restore.add_argument("backup_file", metavar="FILE", help="backup file to restore")
    restore.add_argument("--to", required=True, metavar="DIR", help="state directory to restore into")

    prune = add("prune", "remove documents past their retention period (never those under legal hold)", _prune)
    prune.add_argument("--older-than", type=int, metavar="DAYS",
                       help="retention in days for documents whose template sets none "
                            "(default: archive.retention_days)")
    prune.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")

    find = add("find", "show what the archive holds about a document or a request", _find)
    target = find.add_mutually_exclusive_group(required=True)
    target.add_argument("--sha256", metavar="HEX", help="SHA-256 of the document")
    target.add_argument("--request", metavar="ID", help="request id")

    add("checkpoint", "sign a checkpoint of the audit log now", _checkpoint)

    renew = add("renew", "add fresh validation data and a new document timestamp to archived PDFs whose last "
                         "timestamp's TSA certificate expires soon", _renew)
    renew.add_argument("--before", type=int, default=90, metavar="DAYS",
                       help="renew files whose TSA certificate expires within DAYS days (default: 90)")
    renew.add_argument("--dry-run", action="store_true", help="list the files due, renew nothing")


def _open(args: argparse.Namespace):
    from archive.api import Archive

    state_dir = resolve_state_dir(args.state_dir)
    config = load_config(state_dir)
    apply_environment(config)
    return Archive.open(state_dir, config)


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _t(message: str, args: argparse.Namespace, **params: Any) -> str:
    return translate(message, args.language, **params)


def _verify(args: argparse.Namespace) -> int:
    with _open(args) as archive:
        report = archive.verify()

    if args.json:
        _print_json(report.to_dict(args.language))
        return 0 if report.ok else 1

    print(_t(N_("Checked {entries} audit entries, {documents} documents and {checkpoints} signed checkpoints."),
             args, entries=report.entries_checked, documents=report.documents_checked,
             checkpoints=report.checkpoints_checked))
    labels = {"error": N_("error"), "warning": N_("warning"), "info": N_("note")}
    for finding in report.findings:
        print(f"  [{_t(labels[finding.severity.value], args)}] {finding.code}: {finding.message(args.language)}")
    if report.findings_not_listed:
        print(_t(N_("{count} more findings are not listed."), args, count=report.findings_not_listed))
    if report.ok:
        print(_t(N_("The archive is intact."), args))
        return 0
    if report.first_broken_entry is not None:
        print(_t(N_("Verification failed; the first broken audit entry is {seq}."), args,
                 seq=report.first_broken_entry), file=sys.stderr)
    else:
        print(_t(N_("Verification failed."), args), file=sys.stderr)
    return 1


def _backup(args: argparse.Namespace) -> int:
    from archive.backup import create_backup

    with _open(args) as archive:
        summary = create_backup(archive, Path(args.to))
        archive.audit("system:cli", "archive.backup_written", object_ids={"audit_seq": summary.audit_seq},
                      reason=f"{summary.documents} documents")
    if args.json:
        _print_json(summary.to_dict())
    else:
        print(_t(N_("Backup written to {path}: {documents} documents, audit log up to entry {seq}, "
                    "signed by {signer}."),
                 args, path=summary.path, documents=summary.documents, seq=summary.audit_seq, signer=summary.signer))
    return 0


def _restore(args: argparse.Namespace) -> int:
    from archive.backup import restore_backup

    # The trust anchors come from the current state dir's config (if any) to check the signer.
    config = load_config(resolve_state_dir(args.state_dir))
    target = Path(args.to).expanduser().resolve()
    result = restore_backup(Path(args.backup_file), target, config.trust_anchors, config.intermediates)
    if args.json:
        _print_json(result)
    else:
        print(_t(N_("Backup checked and restored into {path}: {files} files, audit log up to entry {seq}."),
                 args, path=result["path"], files=result["files"], seq=result["audit_head"]["seq"]))
    return 0


def _prune(args: argparse.Namespace) -> int:
    from archive.retention import prune

    with _open(args) as archive:
        removed = prune(archive, older_than_days=args.older_than, actor="system:cli", dry_run=args.dry_run)
    if args.json:
        _print_json({"dry_run": args.dry_run, "documents": [document.to_dict() for document in removed]})
        return 0
    template = N_("{count} documents would be removed.") if args.dry_run else N_("{count} documents removed.")
    print(_t(template, args, count=len(removed)))
    for document in removed:
        print(f"  {document.sha256}  {document.stored_at}  {document.retention_days}d")
    return 0


def _find(args: argparse.Namespace) -> int:
    with _open(args) as archive:
        result = archive.find(sha256=args.sha256) if args.sha256 else archive.find(request_id=args.request)
    found = result.get("document") or result.get("request") or result.get("audit")
    if args.json:
        _print_json(result)
        return 0 if found else 1
    if not found:
        print(_t(N_("The archive holds nothing about {what}."), args, what=args.sha256 or args.request))
        return 1
    _print_find(result, args)
    return 0


def _print_find(result: dict[str, Any], args: argparse.Namespace) -> None:
    document = result.get("document")
    if document:
        state = _t(N_("pruned"), args) if document["pruned_at"] else (
            _t(N_("present"), args) if result["file_present"] else _t(N_("file missing"), args))
        print(_t(N_("Document {sha256}: {size} bytes, {kind}, stored {stored_at}, {state}."), args,
                 sha256=document["sha256"], size=document["size"], kind=document["kind"],
                 stored_at=document["stored_at"], state=state))
        if document["legal_hold"]:
            print("  " + _t(N_("Under legal hold."), args))
    request = result.get("request")
    if request:
        print(_t(N_("Request {id}: state {state}, template {template}, original {original}, signed {signed}."),
                 args, id=request["id"], state=request["state"], template=request["template_id"] or "-",
                 original=request["original_sha256"] or "-", signed=request["signed_sha256"] or "-"))
    for item in result.get("requests", []):
        print("  " + _t(N_("Used by request {id} (state {state})."), args, id=item["id"], state=item["state"]))
    for item in result.get("job_items", []):
        print("  " + _t(N_("Used by job {job} item {item} (state {state})."), args, job=item["job_id"],
                        item=item["item_key"], state=item["state"]))
    entries = result.get("audit", [])
    print(_t(N_("{count} audit entries:"), args, count=len(entries)))
    for entry in entries:
        print(f"  #{entry['seq']} {entry['time']} {entry['actor']} {entry['action']} {entry['outcome']}")


def _checkpoint(args: argparse.Namespace) -> int:
    with _open(args) as archive:
        result = archive.checkpoint()
    if args.json:
        _print_json({"seq": result[0], "head_hash": result[1]} if result else None)
    elif result:
        print(_t(N_("Checkpoint signed at audit entry {seq}."), args, seq=result[0]))
    else:
        print(_t(N_("Nothing to sign: the audit log is empty or its last entry is already checkpointed."), args))
    return 0


RENEWED = N_("Renewed {previous} -> {sha256} (TSA certificate valid until {not_after})")
RENEW_FAILED = N_("Renewal of {sha256} failed: {reason}")
RENEW_DUE = N_("Due for renewal: {sha256} (TSA certificate of its last {kind} timestamp expires {not_after})")
RENEW_SUMMARY = N_("{renewed} renewed, {failed} failed.")


def _renew(args: argparse.Namespace) -> int:
    from archive.renew import find_due, renew_due

    with _open(args) as archive:
        if args.dry_run:
            due = find_due(archive, args.before)
            if args.json:
                _print_json([{"sha256": item.sha256, "timestamp_kind": item.timestamp_kind,
                              "tsa_not_after": item.tsa_not_after.isoformat()} for item in due])
            for item in due if not args.json else ():
                print(_t(RENEW_DUE, args, sha256=item.sha256, kind=item.timestamp_kind,
                         not_after=item.tsa_not_after.isoformat()))
            return 0
        results, failures = renew_due(archive, archive.config, args.before, actor="cli:archive-renew")

    if args.json:
        _print_json({"renewed": [result.to_dict() for result in results],
                     "failed": [{"sha256": sha256, "error": getattr(error, "code", type(error).__name__),
                                 "message": error.message(args.language) if hasattr(error, "message")
                                 else str(error)} for sha256, error in failures]})
    else:
        for result in results:
            print(_t(RENEWED, args, previous=result.previous_sha256, sha256=result.sha256,
                     not_after=result.tsa_not_after.isoformat()))
        for sha256, error in failures:
            reason = error.message(args.language) if hasattr(error, "message") else str(error)
            print(_t(RENEW_FAILED, args, sha256=sha256, reason=reason), file=sys.stderr)
        print(_t(RENEW_SUMMARY, args, renewed=len(results), failed=len(failures)))
    return 1 if failures else 0
