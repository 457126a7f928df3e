"""Errors of ``qsign softhsm init``, each with a stable code and a message that names the fix."""

from __future__ import annotations

from qsign.errors import QsignError
from qsign.i18n import N_

__all__ = [
    "SoftHsmSetupError",
    "SoftHsmModuleMissing",
    "SoftHsmUtilMissing",
    "TokenInitFailed",
    "KeyMismatch",
    "CertificateMismatch",
    "PkiIncomplete",
]


class SoftHsmSetupError(QsignError):
    """An error while making the SoftHSM2 tokens and the test PKI of a state dir."""

    code = "softhsm_setup_failed"
    message_template = N_("Setting up the SoftHSM2 tokens failed.")


class SoftHsmModuleMissing(SoftHsmSetupError):
    code = "softhsm_module_missing"
    message_template = N_("SoftHSM2 is not installed: libsofthsm2.so was not found in {candidates}. "
                          "Install it with \"sudo apt-get install softhsm2\" and run the command again.")


class SoftHsmUtilMissing(SoftHsmSetupError):
    code = "softhsm_util_missing"
    message_template = N_("The program softhsm2-util was not found on PATH. "
                          "Install it with \"sudo apt-get install softhsm2\" and run the command again.")


class TokenInitFailed(SoftHsmSetupError):
    code = "softhsm_token_init_failed"
    message_template = N_("softhsm2-util could not initialise token {token} (exit status {status}): {detail}")


class KeyMismatch(SoftHsmSetupError):
    code = "softhsm_key_mismatch"
    message_template = N_("Key {key} on token {token} already exists but differs from what qsign makes: "
                          "{detail}. Remove the state dir {state_dir} and run \"qsign softhsm init\" again.")


class CertificateMismatch(SoftHsmSetupError):
    code = "softhsm_certificate_mismatch"
    message_template = N_("The certificate of key {key} on token {token} does not fit this state dir: "
                          "{detail}. Remove the state dir {state_dir} and run \"qsign softhsm init\" again.")


class PkiIncomplete(SoftHsmSetupError):
    code = "softhsm_pki_incomplete"
    message_template = N_("The test PKI in {pki_dir} is incomplete or inconsistent: {detail}. "
                          "Remove the state dir and run \"qsign softhsm init\" again.")
