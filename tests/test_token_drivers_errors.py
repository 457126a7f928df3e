"""Error codes of token_drivers, each produced by a real condition on SoftHSM2 2.6.1.

``token_ambiguous``, ``key_ambiguous`` and ``device_removed`` need tokens of their own and are in
test_token_drivers_tokens.py. SoftHSM2 2.6.1 never locks a user PIN (wrong PINs only set
``CKF_USER_PIN_COUNT_LOW``), so ``pin_final_try``, ``pin_locked`` and ``pin_expired`` come from
openCryptoki's software token in test_token_drivers_opencryptoki.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pkcs11 import Mechanism, ObjectClass

from conftest import run_qsign
from qsign.config import Config, apply_environment, load_config
from token_drivers.errors import (KeyNotFound, MechanismInvalid, PinIncorrect, SessionClosed, TokenError,
                                  TokenNotPresent, UserNotLoggedIn, pkcs11_errors)
from token_drivers.inventory import list_slots
from token_drivers.keys import find_token, open_key, open_profile_key
from token_drivers.module import load_module

OFFICER_TOKEN = "qsign-officer"
#: A wrong PIN that no log line, id or serial number contains by chance.
WRONG_PIN = "864209"


@pytest.fixture(scope="module")
def config(softhsm_state: Path) -> Config:
    loaded = load_config(softhsm_state)
    apply_environment(loaded)
    return loaded


@pytest.fixture(scope="module")
def officer_pin(config: Config) -> str:
    pin_file = config.tokens["officer"].pin_file
    assert pin_file is not None
    return pin_file.read_text(encoding="utf-8").strip()


def test_wrong_pin_is_pin_incorrect(config: Config) -> None:
    with pytest.raises(PinIncorrect) as raised:
        open_key(config.default_module, pin=WRONG_PIN, token_label=OFFICER_TOKEN, key_label="officer-rsa")

    assert raised.value.code == "pin_incorrect"
    assert raised.value.ids["token"] == OFFICER_TOKEN


def test_softhsm_never_locks_the_pin(config: Config, officer_pin: str) -> None:
    """Why the PIN-lock codes need another module: three wrong PINs only set COUNT_LOW."""
    for _ in range(3):
        with pytest.raises(PinIncorrect):
            open_key(config.default_module, pin=WRONG_PIN, token_label=OFFICER_TOKEN, key_label="officer-rsa")

    pin_state = next(slot.token.pin for slot in list_slots(load_module(config.default_module))
                     if slot.token is not None and slot.token.label == OFFICER_TOKEN)
    assert pin_state.count_low
    assert not pin_state.final_try
    assert not pin_state.locked

    with open_key(config.default_module, pin=officer_pin, token_label=OFFICER_TOKEN, key_label="officer-rsa") as key:
        assert key.sign(b"the right PIN still works")


@pytest.mark.parametrize(("token_label", "key_label", "key_id", "expected"), [
    ("qsign-absent", "officer-rsa", None, TokenNotPresent),
    (OFFICER_TOKEN, "absent-key", None, KeyNotFound),
    (OFFICER_TOKEN, None, b"\xde\xad", KeyNotFound),
    # seal-rsa exists, but on the other token.
    (OFFICER_TOKEN, "seal-rsa", None, KeyNotFound),
])
def test_missing_token_or_key(config: Config, officer_pin: str, token_label: str, key_label: str | None,
                              key_id: bytes | None, expected: type[TokenError]) -> None:
    with pytest.raises(expected) as raised:
        open_key(config.default_module, pin=officer_pin, token_label=token_label, key_label=key_label,
                 key_id=key_id)

    assert raised.value.code == expected.code
    assert raised.value.ids["token"] == token_label


def test_mechanism_missing_from_softhsm(config: Config) -> None:
    """SoftHSM2 2.6.1 has no CKM_ECDSA_SHA256 and returns CKR_MECHANISM_INVALID for it."""
    with open_profile_key(config, "officer_ec") as key:
        assert Mechanism.ECDSA_SHA256 not in key.mechanisms
        with key.module.lock:
            token = find_token(key.module, token_label=key.token_label)
            with token.open() as session:
                private_key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key.key_label)
                with pytest.raises(MechanismInvalid) as raised, pkcs11_errors(token=key.token_label,
                                                                               mechanism="ECDSA_SHA256"):
                    private_key.sign(b"message", mechanism=Mechanism.ECDSA_SHA256)

    assert raised.value.code == "mechanism_invalid"
    assert "ECDSA_SHA256" in raised.value.message("en")


@pytest.mark.parametrize(("profile", "digest_algorithm", "pss"), [
    ("officer_ec", "sha256", True),  # RSA-PSS on an EC key
    ("officer", "md5", False),
    ("officer_ec", "sha1", False),
])
def test_signature_request_without_mechanism(config: Config, profile: str, digest_algorithm: str,
                                             pss: bool) -> None:
    with open_profile_key(config, profile) as key, pytest.raises(MechanismInvalid) as raised:
        key.sign(b"message", digest_algorithm=digest_algorithm, pss=pss)

    assert raised.value.code == "mechanism_invalid"


def test_always_authenticate_without_context_login(config: Config) -> None:
    with open_profile_key(config, "officer_qualified") as key, key.module.lock:
        token = find_token(key.module, token_label=key.token_label)
        # key's session logged the application in, so this second session finds the private key,
        # and signs with it without the context-specific login.
        with token.open() as session:
            private_key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key.key_label)
            with pytest.raises(UserNotLoggedIn) as raised, pkcs11_errors(token=key.token_label):
                private_key.sign(b"message", mechanism=Mechanism.SHA256_RSA_PKCS)

    assert raised.value.code == "user_not_logged_in"


def test_sign_after_session_closed_under_key(config: Config) -> None:
    """SoftHSM2 returns CKR_SESSION_HANDLE_INVALID for a session closed under an open key."""
    with open_profile_key(config, "officer") as key:
        with key.module.lock:
            key._session.close()
        with pytest.raises(SessionClosed) as raised:
            key.sign(b"message")

    assert raised.value.code == "session_closed"
    assert type(raised.value.__cause__).__name__ == "SessionHandleInvalid"


def test_sign_after_key_closed(config: Config) -> None:
    key = open_profile_key(config, "officer_qualified")
    key.close()

    with pytest.raises(SessionClosed) as raised:
        key.sign(b"message")

    assert raised.value.code == "session_closed"


def _texts_of(error: TokenError) -> list[str]:
    texts = [str(error), repr(error), error.message("en"), error.message("zh_CN"),
             json.dumps(error.to_dict("zh_CN"), ensure_ascii=False)]
    cause = error.__cause__
    while cause is not None:
        texts += [str(cause), repr(cause)]
        cause = cause.__cause__
    return texts


def test_pin_absent_from_logs_and_errors(config: Config, officer_pin: str,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PinIncorrect) as raised:
        open_key(config.default_module, pin=WRONG_PIN, token_label=OFFICER_TOKEN, key_label="officer-rsa")
    with open_key(config.default_module, pin=officer_pin, token_label=OFFICER_TOKEN,
                  key_label="officer-qualified") as key:
        key.sign(b"message")
        key_texts = [repr(key), repr(key.info)]

    assert "opened key officer-qualified" in caplog.text
    for pin in (WRONG_PIN, officer_pin):
        assert pin not in caplog.text
        for text in _texts_of(raised.value) + key_texts:
            assert pin not in text


@pytest.mark.parametrize("right_pin", [False, True], ids=["wrong-pin", "right-pin"])
def test_pin_absent_from_cli_output(softhsm_state: Path, officer_pin: str, tmp_path: Path,
                                    right_pin: bool) -> None:
    pin = officer_pin if right_pin else WRONG_PIN
    pin_file = tmp_path / "pin"
    pin_file.write_text(pin + "\n", encoding="utf-8")

    completed = run_qsign("tokens", "--json", "--verbose", "--login", OFFICER_TOKEN, "--pin-file", str(pin_file),
                          state_dir=softhsm_state)

    # --verbose is in effect: INFO lines are logged only with it.
    assert "INFO token_drivers.module: loaded PKCS#11 module" in completed.stderr
    assert pin not in completed.stdout
    assert pin not in completed.stderr
    if right_pin:
        assert completed.returncode == 0, completed.stderr
        officer = next(token for token in json.loads(completed.stdout) if token["label"] == OFFICER_TOKEN)
        assert officer["logged_in"] is True
    else:
        assert completed.returncode != 0
        assert "Traceback" in completed.stderr
        assert json.loads(completed.stdout)["error"]["code"] == "pin_incorrect"
