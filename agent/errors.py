"""Errors the agent's API returns, each with a stable code and an HTTP status."""

from __future__ import annotations

from qsign.errors import InvalidInput, QsignError
from qsign.i18n import N_

__all__ = ["AgentError", "Unauthorized", "DeviceRevoked", "PairingCodeInvalid", "PairingCodeExpired",
           "PairingCodeUsed", "HostNotAllowed", "RequestNotFound", "RequestStateConflict", "DigestMismatch",
           "RateLimited", "RequestTooLarge", "DocumentTypeMismatch", "PdfMalformed", "PageNotFound",
           "TokenWaitTimedOut", "SignedDocumentMissing", "NotFound", "MethodNotAllowed", "BadRequestBody"]


class AgentError(QsignError):
    code = "agent_error"
    message_template = N_("The agent could not complete the request.")


class Unauthorized(AgentError):
    code = "unauthorized"
    message_template = N_("A valid bearer token of a paired device is required. Pair the device first.")
    http_status = 401


class DeviceRevoked(AgentError):
    code = "device_revoked"
    message_template = N_("Device {device} has been revoked. Pair it again to continue.")
    http_status = 401


class PairingCodeInvalid(AgentError):
    code = "pairing_code_invalid"
    message_template = N_("The pairing code is not valid. Make a new one with \"qsign agent pair\".")
    http_status = 401


class PairingCodeExpired(AgentError):
    code = "pairing_code_expired"
    message_template = N_("The pairing code has expired. Make a new one with \"qsign agent pair\".")
    http_status = 401


class PairingCodeUsed(AgentError):
    code = "pairing_code_used"
    message_template = N_("The pairing code has already been used. Make a new one with \"qsign agent pair\".")
    http_status = 401


class HostNotAllowed(AgentError):
    code = "host_not_allowed"
    message_template = N_("The Host header {host} is not on the agent's allow-list.")
    http_status = 421


class RequestNotFound(AgentError):
    code = "request_not_found"
    message_template = N_("There is no signature request {request}.")
    http_status = 404


class RequestStateConflict(AgentError):
    code = "request_state_conflict"
    message_template = N_("Request {request} is {state}; it cannot be {action} now.")
    http_status = 409


class DigestMismatch(AgentError):
    code = "digest_mismatch"
    message_template = N_("The confirmed SHA-256 does not match the stored document of request {request}. "
                          "Nothing was signed; open the preview again and confirm the digest shown there.")
    http_status = 409


class RateLimited(AgentError):
    code = "rate_limited"
    message_template = N_("Too many signing attempts by {subject}. Wait {seconds} seconds and try again.")
    http_status = 429


class RequestTooLarge(AgentError):
    code = "request_too_large"
    message_template = N_("The request body is larger than the limit of {limit} bytes.")
    http_status = 413


class DocumentTypeMismatch(InvalidInput):
    code = "document_type_mismatch"
    message_template = N_("The file {name} is declared as {declared} but its content is {detected}.")
    http_status = 415


class PdfMalformed(InvalidInput):
    code = "pdf_malformed"
    message_template = N_("The PDF {name} cannot be read: {reason}")
    http_status = 422


class PageNotFound(AgentError):
    code = "page_not_found"
    message_template = N_("The document has no page {page}; it has {count} pages.")
    http_status = 404


class TokenWaitTimedOut(AgentError):
    code = "token_wait_timeout"
    message_template = N_("No token {token} appeared within {seconds} seconds. Insert or tap the token and retry.")
    http_status = 504


class SignedDocumentMissing(AgentError):
    code = "not_signed_yet"
    message_template = N_("Request {request} has no signed document yet.")
    http_status = 409


class NotFound(AgentError):
    code = "not_found"
    message_template = N_("There is no resource at {path}.")
    http_status = 404


class MethodNotAllowed(AgentError):
    code = "method_not_allowed"
    message_template = N_("The method {method} is not allowed for {path}.")
    http_status = 405


class BadRequestBody(InvalidInput):
    code = "invalid_request_body"
    message_template = N_("The request body is invalid: {detail}")
