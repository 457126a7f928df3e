"""Words the pages show for stored values: request states, event states, roles, failure codes."""

from __future__ import annotations

from typing import Callable

from qsign.i18n import N_

__all__ = ["STATE_LABELS", "ROLE_LABELS", "FAILURE_HINTS", "state_label", "role_label", "failure_hint"]

STATE_LABELS = {
    "waiting_for_review": N_("Waiting for review"),
    "approved": N_("Approved, waiting for the signature"),
    "rejected": N_("Rejected"),
    "waiting_for_token": N_("Tap your token on the phone or insert it"),
    "token_present": N_("Token found"),
    "wrong_token": N_("This card does not hold your signing certificate. Use your own card."),
    "signing": N_("Signing"),
    "signed": N_("Done: signed"),
    "failed": N_("Signing failed"),
    "cancelled": N_("Cancelled"),
    "expired": N_("Expired"),
}

ROLE_LABELS = {
    "officer": N_("Officer"),
    "reviewer": N_("Reviewer"),
    "operator": N_("Operator"),
    "auditor": N_("Auditor"),
    "admin": N_("Administrator"),
}

#: Next step for the officer after a signature failed, by the error code that the event stream reports.
FAILURE_HINTS = {
    "pin_incorrect": N_("The PIN is wrong. Enter the PIN again; after a few wrong PINs the token locks."),
    "pin_locked": N_("The token's PIN is locked. Ask the administrator to unlock it with the PUK."),
    "pin_final_try": N_("One more wrong PIN locks the token. Check the PIN before you try again."),
    "token_wait_timeout": N_("No token appeared in time. Tap or insert the token and try again."),
    "token_not_present": N_("The token is not present. Tap or insert the token and try again."),
    "device_removed": N_("The token was removed during the signature. Nothing was signed; try again."),
    "policy_denied": N_("The policy does not allow this signature. Ask the administrator."),
    "interrupted": N_("The signature was interrupted. Nothing was signed; try again."),
}


def state_label(state: str, gettext: Callable[[str], str]) -> str:
    return gettext(STATE_LABELS[state]) if state in STATE_LABELS else state


def role_label(role: str, gettext: Callable[[str], str]) -> str:
    return gettext(ROLE_LABELS[role]) if role in ROLE_LABELS else role


def failure_hint(code: str | None, gettext: Callable[[str], str]) -> str:
    return gettext(FAILURE_HINTS.get(code or "", N_("The signature failed. Try again, or ask the administrator "
                                                    "with the error code shown.")))
