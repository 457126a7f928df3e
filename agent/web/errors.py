"""Errors of the web pages, each with a message that tells the user what to do next."""

from __future__ import annotations

from qsign.errors import InvalidInput, QsignError
from qsign.i18n import N_

__all__ = ["SessionExpired", "CsrfInvalid", "SignInFailed", "SignInRateLimited", "RoleRequired", "FormInvalid"]


class SessionExpired(QsignError):
    code = "session_expired"
    message_template = N_("Your session has expired. Sign in again.")
    http_status = 401


class CsrfInvalid(QsignError):
    code = "csrf_invalid"
    message_template = N_("The form has expired or did not come from this agent's page. "
                          "Go back, reload the page and send the form again.")
    http_status = 403


class SignInFailed(QsignError):
    code = "sign_in_failed"
    message_template = N_("The user name or the password is wrong. Check both and try again; "
                          "an administrator can set a new password.")
    http_status = 401


class SignInRateLimited(QsignError):
    code = "sign_in_rate_limited"
    message_template = N_("Too many failed sign-ins for this user or from this device. Try again in {minutes} "
                          "minutes, after {time} UTC; an administrator can set a new password.")
    http_status = 429


class RoleRequired(QsignError):
    code = "role_required"
    message_template = N_("This page needs the role {role}. Ask an administrator to give it to you.")
    http_status = 403


class FormInvalid(InvalidInput):
    code = "form_invalid"
    message_template = N_("The form is invalid: {detail}. Correct it and send it again.")
