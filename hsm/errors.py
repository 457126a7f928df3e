"""Errors of bulk sealing, each with a stable ``code`` that clients, manifests and tests match on.

Per-document errors (``InvalidInput`` subclasses) are recorded on the document's job item and do not
stop the batch. Job-level errors end the command.
"""

from __future__ import annotations

from qsign.errors import ConfigError, InvalidInput, QsignError
from typing import Any

from qsign.i18n import DEFAULT_LANGUAGE, N_, translate

__all__ = [
    "ProfileNotFound",
    "ProfileInvalid",
    "JobNotFound",
    "JobRunning",
    "NoInputs",
    "OutputDirInvalid",
    "OutputExists",
    "OutputConflict",
    "OutputForeign",
    "OutputWriteFailed",
    "ZipUnsafe",
    "ZipInvalid",
    "WorkerLost",
    "WorkerStartFailed",
]


class ProfileNotFound(ConfigError):
    code = "profile_not_found"
    message_template = N_("No bulk profile [profiles.{profile}] in {path}; run 'qsign bulk profiles' to list them.")


class ProfileInvalid(ConfigError):
    code = "profile_invalid"
    message_template = N_("The bulk profile [profiles.{profile}] is invalid: {detail}")


class JobNotFound(InvalidInput):
    code = "job_not_found"
    message_template = N_("No bulk job {job} in this state directory.")
    http_status = 404


class JobRunning(QsignError):
    code = "job_running"
    message_template = N_("Bulk job {job} is running in another process; wait for it or stop it first.")
    http_status = 409
    #: Distinct from 1, which ``qsign bulk`` returns for a job that finished with failed documents.
    exit_code = 3


class NoInputs(InvalidInput):
    code = "no_inputs"
    message_template = N_("No input documents were found in the given paths.")


class OutputDirInvalid(InvalidInput):
    code = "output_dir_invalid"
    message_template = N_("The output directory {path} cannot be used: {reason}")


class OutputExists(InvalidInput):
    code = "output_exists"
    message_template = N_("The output file {path} already exists; it is never replaced.")


class OutputConflict(InvalidInput):
    code = "output_conflict"
    message_template = N_("Two inputs map to the same output file {path}; rename one of them.")


class OutputForeign(InvalidInput):
    code = "output_foreign"
    message_template = N_("The output file {path} exists but is not a signed copy of its input; it was left as it is.")


class OutputWriteFailed(QsignError):
    code = "output_write_failed"
    message_template = N_("Writing the output file {path} failed: {reason}")


class ZipUnsafe(InvalidInput):
    code = "zip_unsafe"
    message_template = N_("The zip archive {path} was rejected: {reason}")


class ZipInvalid(InvalidInput):
    code = "zip_invalid"
    message_template = N_("The zip archive {path} cannot be read: {reason}")


class WorkerLost(QsignError):
    code = "worker_lost"
    message_template = N_("The worker process sealing {item} ended unexpectedly twice.")


class TokenLost(QsignError):
    code = "token_lost"
    message_template = N_("The token of profile {profile} went away during job {job} and its session could not be "
                          "opened again ({code}); connect the token and run 'qsign bulk resume {job}'.")


class WorkerStartFailed(QsignError):
    """A worker failed before it sealed anything; ``details`` is its error message by language."""

    code = "worker_start_failed"
    message_template = N_("A worker process could not start sealing ({code}): {detail}")

    def __init__(self, *, code: str, details: dict[str, str], ids: dict[str, Any] | None = None) -> None:
        self.details = details
        super().__init__(ids=ids, code=code, detail=details.get("en", ""))

    def message(self, language: str = DEFAULT_LANGUAGE) -> str:
        detail = self.details.get(language) or self.details.get("en", "")
        return translate(self.message_template, language, **{**self.params, "detail": detail})
