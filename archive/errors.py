"""Errors of the archive, each with a stable code that clients and tests match on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qsign.errors import InvalidInput, QsignError
from qsign.i18n import N_, translate

__all__ = [
    "Reason",
    "localize_params",
    "ArchiveError",
    "DocumentNotFound",
    "DocumentCorrupt",
    "KeyEncryptionKeyUnavailable",
    "SignerUnavailable",
    "BackupInvalid",
    "RestoreTargetNotEmpty",
    "RecordNotFound",
    "InvalidDigest",
]


@dataclass(frozen=True)
class Reason:
    """A translatable message fragment used as a parameter of another message (``reason=Reason(...)``)."""

    template: str
    args: dict[str, Any] = field(default_factory=dict)

    def text(self, language: str) -> str:
        return translate(self.template, language, **localize_params(self.args, language))

    def __str__(self) -> str:
        return self.text("en")


def localize_params(params: dict[str, Any], language: str) -> dict[str, Any]:
    """Return ``params`` with every ``Reason`` replaced by its text in ``language``."""
    return {name: value.text(language) if isinstance(value, Reason) else value for name, value in params.items()}


class ArchiveError(QsignError):
    """An error of the archive: database, document store, audit log or backups."""

    code = "archive_error"
    message_template = N_("The archive reported an error.")

    def message(self, language: str = "zh_CN") -> str:
        """Return the human message in ``language``, with ``Reason`` parameters translated too."""
        return translate(self.message_template, language, **localize_params(self.params, language))


class DocumentNotFound(ArchiveError):
    code = "document_not_found"
    message_template = N_("No document with SHA-256 {sha256} is stored in the archive.")
    http_status = 404


class DocumentCorrupt(ArchiveError):
    code = "document_corrupt"
    message_template = N_("The stored document {sha256} is corrupt ({reason}) and is not returned. "
                          "Restore it from a backup and run \"qsign archive verify\".")


class KeyEncryptionKeyUnavailable(ArchiveError):
    code = "kek_unavailable"
    message_template = N_("The archive's key-encryption key is not available: {reason}. "
                          "Check archive.encryption and the key's token or file.")


class SignerUnavailable(ArchiveError):
    code = "archive_signer_unavailable"
    message_template = N_("No key is configured to sign archive checkpoints and backups. "
                          "Set archive.checkpoint_profile in qsign.toml.")


class BackupInvalid(ArchiveError):
    code = "backup_invalid"
    message_template = N_("The backup {path} is rejected: {reason}.")
    exit_code = 1


class RestoreTargetNotEmpty(InvalidInput):
    code = "restore_target_not_empty"
    message_template = N_("The restore target {path} already holds an archive. Choose an empty directory.")


class RecordNotFound(ArchiveError):
    code = "record_not_found"
    message_template = N_("No {kind} with id {id} is recorded in the archive.")
    http_status = 404


class InvalidDigest(InvalidInput):
    code = "invalid_sha256"
    message_template = N_("{value} is not a SHA-256 value: give 64 hexadecimal digits.")
