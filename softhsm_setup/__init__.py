"""Ready SoftHSM2 tokens with a test PKI, for tests, demos and trying qsign without hardware.

``init_state(state_dir)`` makes or completes a state dir and returns an ``InitReport``;
``format_report`` and ``report_json`` render that report as ``qsign softhsm init`` prints it.
"""

from softhsm_setup.errors import (
    CertificateMismatch,
    KeyMismatch,
    PkiIncomplete,
    SoftHsmModuleMissing,
    SoftHsmSetupError,
    SoftHsmUtilMissing,
    TokenInitFailed,
)
from softhsm_setup.files import Status
from softhsm_setup.init import find_softhsm_module, init_state
from softhsm_setup.layout import StateLayout
from softhsm_setup.report import CertificateResult, InitReport, KeyResult, TokenResult
from softhsm_setup.specs import KEYS, TEST_SO_PIN, TEST_USER_PIN, TOKENS, KeySpec, TokenSpec
from softhsm_setup.summary import format_report, report_json

__all__ = [
    "init_state",
    "find_softhsm_module",
    "format_report",
    "report_json",
    "InitReport",
    "TokenResult",
    "KeyResult",
    "CertificateResult",
    "Status",
    "StateLayout",
    "KeySpec",
    "TokenSpec",
    "KEYS",
    "TOKENS",
    "TEST_USER_PIN",
    "TEST_SO_PIN",
    "SoftHsmSetupError",
    "SoftHsmModuleMissing",
    "SoftHsmUtilMissing",
    "TokenInitFailed",
    "KeyMismatch",
    "CertificateMismatch",
    "PkiIncomplete",
]
