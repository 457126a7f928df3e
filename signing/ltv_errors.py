"""Errors of timestamps and long-term validation (PAdES B-T, B-LT, B-LTA), each with a stable ``code``.

None of them is ever turned into a lower level: a signature that cannot get its timestamp or its
revocation data fails, and no output file is written.
"""

from __future__ import annotations

from qsign.errors import ConfigError, InvalidInput, QsignError
from qsign.i18n import N_

__all__ = [
    "TsaUnavailable",
    "TsaResponseInvalid",
    "TsaNotConfigured",
    "RevocationUnavailable",
    "SignerRevoked",
    "SignerNotTrusted",
    "LevelUnknown",
    "LevelNotSupported",
]


class TsaUnavailable(QsignError):
    code = "tsa_unavailable"
    message_template = N_("The time-stamping authority {url} could not be reached after {attempts} attempts: "
                          "{reason}. Nothing was signed; try again when the TSA is available.")
    http_status = 503


class TsaResponseInvalid(QsignError):
    code = "tsa_response_invalid"
    message_template = N_("The time-stamping authority {url} returned an invalid response: {reason}. "
                          "Nothing was signed.")
    http_status = 502


class TsaNotConfigured(ConfigError):
    code = "tsa_not_configured"
    message_template = N_("Level {level} needs a time-stamping authority, but qsign.toml has no [tsa] url.")


class RevocationUnavailable(QsignError):
    code = "revocation_unavailable"
    message_template = N_("The revocation status of certificate {subject} could not be fetched: {reason}. "
                          "Signing at level {level} checks it first; check that the OCSP responder or CRL "
                          "server is reachable.")
    http_status = 503


class SignerRevoked(QsignError):
    code = "signer_revoked"
    message_template = N_("The signer's certificate {subject} was revoked at {revoked_at} ({reason}). "
                          "Signing with it is refused.")
    http_status = 403


class SignerNotTrusted(QsignError):
    code = "signer_not_trusted"
    message_template = N_("The signer's certificate {subject} does not chain to a trust anchor of qsign.toml "
                          "or is not valid now: {reason}")
    http_status = 403


class LevelUnknown(InvalidInput):
    code = "level_unknown"
    message_template = N_("Unknown signature level {level}. Use B-B, B-T, B-LT or B-LTA.")


class LevelNotSupported(InvalidInput):
    code = "level_not_supported"
    message_template = N_("Level {level} is not available for {format} signatures (CAdES: B-B and B-T).")
