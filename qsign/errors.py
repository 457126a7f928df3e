"""Base class of every error qsign reports to a user.

An error has a stable English ``code`` that clients and tests match on, a message template in
English that the gettext catalogs translate, and the ids of the objects involved. The message
template uses ``{name}`` placeholders filled from ``params``; a PIN is never a parameter.
"""

from __future__ import annotations

from typing import Any

from qsign.i18n import DEFAULT_LANGUAGE, N_, translate

__all__ = ["QsignError", "InvalidInput", "ConfigError"]


class QsignError(Exception):
    """An error with a stable code, a translatable message and the ids involved."""

    code: str = "internal_error"
    message_template: str = N_("An internal error occurred.")
    #: HTTP status that services answer with for this error.
    http_status: int = 500
    #: Process exit code for the CLI.
    exit_code: int = 1

    def __init__(self, message_template: str | None = None, *, ids: dict[str, Any] | None = None,
                 **params: Any) -> None:
        if message_template is not None:
            self.message_template = message_template
        self.params = params
        self.ids = dict(ids or {})
        super().__init__(self.message("en"))

    def message(self, language: str = DEFAULT_LANGUAGE) -> str:
        """Return the human message in ``language`` (``zh_CN`` or ``en``)."""
        return translate(self.message_template, language, **self.params)

    def to_dict(self, language: str = DEFAULT_LANGUAGE) -> dict[str, Any]:
        """Return the error as the JSON object that the CLI and the services print."""
        result: dict[str, Any] = {"code": self.code, "message": self.message(language)}
        if self.ids:
            result["ids"] = {key: str(value) for key, value in self.ids.items()}
        return result


class InvalidInput(QsignError):
    """Input from a user or a client that qsign cannot use."""

    code = "invalid_input"
    message_template = N_("The input is invalid.")
    http_status = 400
    exit_code = 2


class ConfigError(QsignError):
    """A configuration file or value that is missing or invalid; the message names the key."""

    code = "config_invalid"
    message_template = N_("The configuration is invalid: {detail}")
    exit_code = 2
