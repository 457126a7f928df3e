"""``qsign archive verify``: check every document, the whole audit chain and the signed checkpoints.

The result is a list of findings, each with a stable ``code``, a severity and the entry or document
it names. ``error`` findings are integrity failures. ``warning`` findings (files without a record
after a crash) need an operator. ``info`` findings state what could not be proved (entries after
the last checkpoint) and do not fail verification.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from archive.audit import GENESIS_HASH, row_hash
from archive.checkpoint import SignedPayload, certificate_trust_problem, parse_checkpoint_payload, verify_payload
from archive.errors import DocumentCorrupt, DocumentNotFound, localize_params
from archive.schema import audit_head, audit_log, checkpoints, documents
from archive.store import TEMP_DIR_NAME, DocumentStore, is_sha256
from qsign.i18n import N_, translate

__all__ = ["Severity", "Finding", "VerifyReport", "verify_archive"]

_logger = logging.getLogger(__name__)

#: Findings past this many are counted but not listed.
MAX_LISTED_FINDINGS = 1000


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    """One problem or fact found by verification."""

    code: str
    severity: Severity
    message_template: str
    params: dict[str, Any] = field(default_factory=dict)
    #: Audit entry sequence number the finding names, if any.
    seq: int | None = None
    #: Document SHA-256 the finding names, if any.
    sha256: str | None = None

    def message(self, language: str) -> str:
        return translate(self.message_template, language, **localize_params(self.params, language))

    def to_dict(self, language: str) -> dict[str, Any]:
        result: dict[str, Any] = {"code": self.code, "severity": self.severity.value,
                                  "message": self.message(language)}
        if self.seq is not None:
            result["seq"] = self.seq
        if self.sha256 is not None:
            result["sha256"] = self.sha256
        return result


@dataclass
class VerifyReport:
    """Everything ``verify_archive`` found, with counts of what it checked."""

    findings: list[Finding] = field(default_factory=list)
    entries_checked: int = 0
    documents_checked: int = 0
    checkpoints_checked: int = 0
    last_checkpoint_seq: int | None = None
    findings_not_listed: int = 0
    #: Entries whose hash matches a neighbouring sequence number: moved by an insertion or deletion.
    renumbered_entries: int = 0

    @property
    def ok(self) -> bool:
        """True when no finding is an error or a warning."""
        return not any(finding.severity != Severity.INFO for finding in self.findings)

    @property
    def first_broken_entry(self) -> int | None:
        """Lowest sequence number named by an error finding."""
        numbers = [f.seq for f in self.findings if f.seq is not None and f.severity == Severity.ERROR]
        return min(numbers) if numbers else None

    def add(self, finding: Finding) -> None:
        if len(self.findings) >= MAX_LISTED_FINDINGS:
            self.findings_not_listed += 1
            return
        self.findings.append(finding)

    def to_dict(self, language: str) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries_checked": self.entries_checked,
            "documents_checked": self.documents_checked,
            "checkpoints_checked": self.checkpoints_checked,
            "last_checkpoint_seq": self.last_checkpoint_seq,
            "first_broken_entry": self.first_broken_entry,
            "findings": [finding.to_dict(language) for finding in self.findings],
            "findings_not_listed": self.findings_not_listed,
            "renumbered_entries": self.renumbered_entries,
        }


def _error(code: str, template: str, seq: int | None = None, sha256: str | None = None,
           severity: Severity = Severity.ERROR, **params: Any) -> Finding:
    if seq is not None:
        params.setdefault("seq", seq)
    if sha256 is not None:
        params["sha256"] = sha256
    return Finding(code=code, severity=severity, message_template=template, params=params, seq=seq,
                   sha256=sha256)


def _check_chain(connection: Connection, report: VerifyReport) -> tuple[int, str]:
    """Walk the log in sequence order; return the last ``(seq, hash)`` seen."""
    expected_seq = 1
    previous_hash = GENESIS_HASH

    for row in connection.execute(select(audit_log).order_by(audit_log.c.seq)).mappings():
        seq = row["seq"]
        report.entries_checked += 1
        gap = seq > expected_seq
        if gap:
            report.add(_error("audit_entries_missing",
                              N_("Audit entries {first} to {last} are missing."),
                              seq=expected_seq, first=expected_seq, last=seq - 1))

        linked_seq = None
        if row["prev_hash"] != previous_hash and not gap:
            linked = connection.execute(
                select(audit_log.c.seq).where(audit_log.c.hash == row["prev_hash"])).first()
            linked_seq = linked.seq if linked is not None else None
            # Two entries linking to the same predecessor form a fork: the first one's branch was inserted.
            fork = linked_seq is not None and linked_seq < seq - 1 and connection.execute(
                select(audit_log.c.prev_hash).where(audit_log.c.seq == linked_seq + 1)
            ).scalar() == row["prev_hash"]
            if fork:
                report.add(_error("audit_entry_inserted",
                                  N_("Audit entries {first} to {last} were inserted: entry {next} was written "
                                     "right after entry {after}."),
                                  seq=linked_seq + 1, first=linked_seq + 1, last=seq - 1, next=seq,
                                  after=linked_seq))
            elif linked_seq is not None:
                report.add(_error("audit_entry_reordered",
                                  N_("Audit entry {seq} is out of order: it was written after entry {after}."),
                                  seq=seq, after=linked_seq))
            else:
                report.add(_error("audit_chain_broken",
                                  N_("Audit entry {seq} does not link to the entry before it: an entry was "
                                     "deleted or changed at this point."), seq=seq))

        if row_hash(row) != row["hash"]:
            if linked_seq is not None or row_hash(row, seq=seq - 1) == row["hash"] \
                    or row_hash(row, seq=seq + 1) == row["hash"]:
                # Entries moved or renumbered by one: the finding at the break already names the cause.
                report.renumbered_entries += 1
            else:
                report.add(_error("audit_entry_altered",
                                  N_("Audit entry {seq} ({action}) was altered: its hash does not match its "
                                     "content."), seq=seq, action=row["action"]))

        expected_seq = seq + 1
        previous_hash = row["hash"]

    last_seq = expected_seq - 1
    head = connection.execute(select(audit_head).where(audit_head.c.id == 1)).mappings().first()
    if head is not None and head["seq"] > last_seq:
        report.add(_error("audit_tail_missing",
                          N_("Audit entries {first} to {last} are missing from the end of the log."),
                          seq=last_seq + 1, first=last_seq + 1, last=head["seq"]))
    elif head is not None and head["seq"] == last_seq and head["hash"] != previous_hash:
        report.add(_error("audit_head_mismatch",
                          N_("The recorded head of the audit log does not match entry {seq}."), seq=last_seq))
    return last_seq, previous_hash


def _as_bytes(value: Any) -> bytes:
    """Return a BLOB column as bytes; an edited row may hold text (SQLite stores any type)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8") if value is not None else b""


def _check_checkpoints(connection: Connection, report: VerifyReport, last_seq: int,
                       anchors: list[Path], intermediates: list[Path]) -> None:
    untrusted_reported = False
    for row in connection.execute(select(checkpoints).order_by(checkpoints.c.seq)).mappings():
        seq = row["seq"]
        report.checkpoints_checked += 1
        signed = SignedPayload(payload=_as_bytes(row["payload"]), digest_algorithm=str(row["digest_algorithm"]),
                               signature=_as_bytes(row["signature"]), certificate=_as_bytes(row["certificate"]),
                               signer=str(row["signer"]))
        fields = parse_checkpoint_payload(signed.payload)
        if not verify_payload(signed) or fields is None:
            report.add(_error("checkpoint_signature_invalid",
                              N_("The signature of the checkpoint at entry {seq} does not verify."), seq=seq))
            continue
        if fields.get("seq") != seq or fields.get("head_hash") != row["head_hash"]:
            report.add(_error("checkpoint_altered",
                              N_("The checkpoint at entry {seq} differs from what was signed."), seq=seq))
            continue

        if anchors:
            problem = certificate_trust_problem(row["certificate"], anchors, intermediates)
            if problem:
                report.add(_error("checkpoint_signer_untrusted",
                                  N_("The checkpoint at entry {seq} was signed by an untrusted certificate: "
                                     "{problem}."), seq=seq, problem=problem))
                continue
        elif not untrusted_reported:
            untrusted_reported = True
            report.add(_error("checkpoint_signer_not_checked",
                              N_("No trust anchors are configured, so checkpoint signers were not checked."),
                              severity=Severity.INFO))

        if seq > last_seq:
            report.add(_error("audit_truncated",
                              N_("The audit log was cut: entry {seq} is covered by a signed checkpoint "
                                 "but the log ends at entry {last}."), seq=seq, last=last_seq))
            report.last_checkpoint_seq = seq
            continue
        entry = connection.execute(select(audit_log.c.hash).where(audit_log.c.seq == seq)).first()
        if entry is None or entry.hash != row["head_hash"]:
            report.add(_error("checkpoint_mismatch",
                              N_("Audit entry {seq} does not match its signed checkpoint."), seq=seq))
        report.last_checkpoint_seq = seq

    if last_seq and (report.last_checkpoint_seq or 0) < last_seq:
        report.add(_error("audit_entries_unsigned",
                          N_("Audit entries {first} to {last} follow the last signed checkpoint; cutting "
                             "them would not be detected until the next checkpoint."),
                          severity=Severity.INFO, first=(report.last_checkpoint_seq or 0) + 1, last=last_seq))


def _check_documents(connection: Connection, report: VerifyReport, store: DocumentStore) -> set[str]:
    """Check each recorded file; return the SHA-256 values the database records."""
    recorded: set[str] = set()
    no_key_reported = False
    for row in connection.execute(select(documents).order_by(documents.c.sha256)).mappings():
        sha256 = row["sha256"]
        recorded.add(sha256)
        if row["pruned_at"]:
            continue
        report.documents_checked += 1
        try:
            if store.stored_digest(sha256) != row["stored_sha256"]:
                report.add(_error("document_altered", N_("Document {sha256} was altered on disk."),
                                  sha256=sha256))
                continue
            if row["encrypted"] and store.kek is None:
                if not no_key_reported:
                    no_key_reported = True
                    report.add(_error("document_plaintext_not_checked",
                                      N_("No key-encryption key is configured: encrypted documents were checked "
                                         "as stored, not decrypted."), severity=Severity.INFO))
                continue
            store.check(sha256)
        except DocumentNotFound:
            report.add(_error("document_missing", N_("Document {sha256} is recorded but its file is missing."),
                              sha256=sha256))
        except DocumentCorrupt as error:
            report.add(_error("document_corrupt", N_("Document {sha256} is corrupt: {reason}."),
                              sha256=sha256, reason=error.params.get("reason", "")))
    return recorded


def _check_orphans(report: VerifyReport, store: DocumentStore, recorded: set[str]) -> None:
    for path in store.iter_files():
        relative = path.relative_to(store.root)
        if relative.parts and relative.parts[0] == TEMP_DIR_NAME:
            report.add(_error("document_incomplete_write",
                              N_("{path} is left from an interrupted write; it can be deleted."),
                              severity=Severity.WARNING, path=str(relative)))
        elif not is_sha256(path.name) or store.path_for(path.name) != path:
            report.add(_error("document_unexpected_file",
                              N_("{path} does not belong in the document store."),
                              severity=Severity.WARNING, path=str(relative)))
        elif path.name not in recorded:
            report.add(_error("document_orphan",
                              N_("Document {sha256} is stored but not recorded in the database (an interrupted "
                                 "write); storing the same document again adopts it."),
                              severity=Severity.WARNING, sha256=path.name))


def verify_archive(connection: Connection, store: DocumentStore, anchors: list[Path],
                   intermediates: list[Path]) -> VerifyReport:
    """Check the audit chain, the checkpoints and every document, in one read transaction."""
    report = VerifyReport()
    last_seq, _last_hash = _check_chain(connection, report)
    _check_checkpoints(connection, report, last_seq, anchors, intermediates)
    recorded = _check_documents(connection, report, store)
    _check_orphans(report, store, recorded)
    _logger.info("archive verified: %d entries, %d documents, %d checkpoints, %d findings",
                 report.entries_checked, report.documents_checked, report.checkpoints_checked,
                 len(report.findings))
    return report

