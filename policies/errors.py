"""Errors of the policies package: an invalid policy file, and a denial by a rule."""

from __future__ import annotations

from qsign.errors import ConfigError, QsignError
from qsign.i18n import N_, translate

__all__ = ["PolicyInvalid", "PolicyDenied"]


class PolicyInvalid(ConfigError):
    """The policy file is missing, is not TOML, or has a key with a bad value; ``key`` names it."""

    code = "policy_invalid"
    message_template = N_("The policy file {path} is invalid at {key}: {detail}")


class PolicyDenied(QsignError):
    """A policy rule denied an action. ``rule`` is the stable name of the rule that decided.

    ``reason`` is an English message id with ``{name}`` placeholders, translated when the message is built.
    """

    code = "policy_denied"
    message_template = N_("The policy does not allow this: {reason}")
    http_status = 403
    exit_code = 3

    def __init__(self, rule: str, reason: str, *, ids: dict[str, object] | None = None,
                 **reason_params: object) -> None:
        self.rule = rule
        self.reason_template = reason
        self.reason_params = reason_params
        super().__init__(ids={**(ids or {}), "rule": rule}, reason=reason)

    def message(self, language: str = "zh_CN") -> str:
        reason = translate(self.reason_template, language, **self.reason_params)
        return translate(self.message_template, language, reason=reason)

    def to_dict(self, language: str = "zh_CN") -> dict[str, object]:
        result = super().to_dict(language)
        result["rule"] = self.rule
        return result
