"""Errors of the verification service: input that cannot be verified, and HTTP request problems.

An error here means no report can be made for the input (exit code 2, HTTP 4xx). Problems found inside a
readable document (a broken signature, an untrusted signer) are not errors: they go into the report.
"""

from __future__ import annotations

from qsign.errors import InvalidInput, QsignError
from qsign.i18n import N_

__all__ = [
    "CmsMalformed",
    "ContentNotExpected",
    "ContentRequired",
    "InputEmpty",
    "InputNotAFile",
    "InputNotFound",
    "ListenAddressInvalid",
    "ListenFailed",
    "NotAPdf",
    "PdfEncrypted",
    "PdfMalformed",
    "TrustAnchorInvalid",
    "UploadInvalid",
    "UploadTooLarge",
    "ValidationCrashed",
    "ValidationMemoryExceeded",
    "ValidationTimeout",
    "LoginRequired",
    "LoginFailed",
    "CsrfFailed",
    "ReportNotFound",
    "AccountExists",
    "AccountNotFound",
    "AccountNameInvalid",
]


class InputNotFound(InvalidInput):
    code = "input_not_found"
    message_template = N_("File not found: {path}.")
    http_status = 404


class InputNotAFile(InvalidInput):
    code = "input_not_file"
    message_template = N_("{path} is not a regular file (a directory?). Give the path of a PDF or CMS file.")


class InputEmpty(InvalidInput):
    code = "input_empty"
    message_template = N_("The file {name} is empty.")


class NotAPdf(InvalidInput):
    code = "not_a_pdf"
    message_template = N_("The file {name} is neither a PDF nor a CMS signature (.p7s).")
    http_status = 415


class PdfMalformed(InvalidInput):
    code = "pdf_malformed"
    message_template = N_("The PDF {name} cannot be read (truncated or damaged): {detail}")
    http_status = 422


class PdfEncrypted(InvalidInput):
    code = "pdf_encrypted"
    message_template = N_("The PDF {name} is encrypted with a password; decrypt it before verifying.")
    http_status = 422


class CmsMalformed(InvalidInput):
    code = "cms_malformed"
    message_template = N_("The CMS signature {name} cannot be read: {detail}")
    http_status = 422


class ContentRequired(InvalidInput):
    code = "content_required"
    message_template = N_("The CMS signature {name} is detached: give the signed file as well "
                          "(--content FILE, or the form field \"content\").")


class ContentNotExpected(InvalidInput):
    code = "content_not_expected"
    message_template = N_("The CMS signature {name} contains the signed content, so no separate content "
                          "file may be given.")


class TrustAnchorInvalid(InvalidInput):
    code = "trust_anchor_invalid"
    message_template = N_("The trust anchor file {path} cannot be read as PEM or DER certificates: {detail}")


class UploadTooLarge(QsignError):
    code = "upload_too_large"
    message_template = N_("The upload is larger than the limit of {limit_mb} MiB.")
    http_status = 413
    exit_code = 2


class UploadInvalid(InvalidInput):
    code = "upload_invalid"
    message_template = N_("The request is invalid: {detail}")


class ListenAddressInvalid(InvalidInput):
    code = "listen_address_invalid"
    message_template = N_("Invalid listen address {value}: expected HOST:PORT, e.g. 127.0.0.1:8470.")


class ListenFailed(QsignError):
    code = "listen_failed"
    message_template = N_("Cannot listen on {address}: {reason}. Choose another address with --listen.")
    exit_code = 1


class ValidationTimeout(InvalidInput):
    code = "validation_timeout"
    message_template = N_("Validating {name} took longer than {seconds} s and was stopped. The file may be "
                          "built to exhaust the validator.")
    http_status = 422


class ValidationMemoryExceeded(InvalidInput):
    code = "validation_memory_exceeded"
    message_template = N_("Validating {name} needed more than {limit_mb} MiB of memory and was stopped.")
    http_status = 422


class ValidationCrashed(InvalidInput):
    code = "validation_crashed"
    message_template = N_("The validation process ended unexpectedly: {detail}")
    http_status = 422


class LoginRequired(QsignError):
    code = "login_required"
    message_template = N_("Log in as an auditor, or send an API token as \"Authorization: Bearer TOKEN\".")
    http_status = 401
    exit_code = 2


class LoginFailed(QsignError):
    code = "login_failed"
    message_template = N_("Unknown user name or wrong password.")
    http_status = 401
    exit_code = 2


class CsrfFailed(QsignError):
    code = "csrf_failed"
    message_template = N_("The form is stale or came from another site; reload the page and try again.")
    http_status = 403
    exit_code = 2


class ReportNotFound(QsignError):
    code = "report_not_found"
    message_template = N_("No report with id {report_id}.")
    http_status = 404
    exit_code = 2


class AccountExists(InvalidInput):
    code = "account_exists"
    message_template = N_("An auditor account named {name} already exists.")


class AccountNotFound(InvalidInput):
    code = "account_not_found"
    message_template = N_("No auditor account named {name}.")
    http_status = 404


class AccountNameInvalid(InvalidInput):
    code = "account_name_invalid"
    message_template = N_("Invalid account name {name}: use 1 to 64 letters, digits, '.', '_' or '-'.")
