"""token_drivers against SoftHSM2 tokens made for each test: duplicate labels, a deleted token,
Chinese labels and subjects, and keys paired with certificates.

Each test makes its own SoftHSM2 configuration in ``tmp_path`` and runs the PKCS#11 calls in a
subprocess (``SoftHsmDir.run_python``) or through the ``qsign`` CLI, because SoftHSM2 reads its
configuration once per process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_qsign
from helpers.softhsm_rig import SOFTHSM_MODULE, KeyRequest, SoftHsmDir
from qsign.config import write_config

pytestmark = pytest.mark.skipif(SOFTHSM_MODULE is None, reason="SoftHSM2 (Debian package softhsm2) is not installed")

PIN = "123456"


def _state_dir_for(rig: SoftHsmDir, state_dir: Path) -> Path:
    """Write a ``qsign.toml`` that points ``qsign`` at the rig's SoftHSM2 tokens."""
    write_config(state_dir / "qsign.toml", {
        "general": {"language": "zh_CN"},
        "pkcs11": {"module": SOFTHSM_MODULE, "softhsm_conf": str(rig.conf)},
    })
    return state_dir


def _tokens_json(state_dir: Path, *args: str) -> list[dict[str, Any]]:
    completed = run_qsign("tokens", "--json", *args, state_dir=state_dir, env={"QSIGN_PIN": PIN})
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_same_label_on_two_tokens_is_ambiguous(tmp_path: Path) -> None:
    rig = SoftHsmDir.create(tmp_path)
    rig.init_token("qsign-twin")
    rig.init_token("qsign-twin")

    result = rig.run_python("""
        from helpers.softhsm_rig import SOFTHSM_MODULE, error_code
        from token_drivers.inventory import list_slots
        from token_drivers.keys import open_key
        from token_drivers.module import load_module

        serials = [slot.token.serial for slot in list_slots(load_module(SOFTHSM_MODULE))
                   if slot.token is not None and slot.token.label == "qsign-twin"]
        result = {
            "serials": serials,
            "by_label": error_code(open_key, SOFTHSM_MODULE, pin="123456", token_label="qsign-twin",
                                   key_label="absent"),
            "by_serial": error_code(open_key, SOFTHSM_MODULE, pin="123456", token_serial=serials[0],
                                    key_label="absent"),
        }
    """)

    assert len(set(result["serials"])) == 2
    assert result["by_label"] == "token_ambiguous"
    # The serial selects one token, so the search goes on to the (missing) key.
    assert result["by_serial"] == "key_not_found"


def test_same_label_on_two_keys_is_ambiguous(tmp_path: Path) -> None:
    rig = SoftHsmDir.create(tmp_path)
    rig.init_token("qsign-keys")
    rig.provision("qsign-keys", [KeyRequest("twin-key", "01", algorithm="ec"),
                                 KeyRequest("twin-key", "02", algorithm="ec")])

    result = rig.run_python("""
        from helpers.softhsm_rig import SOFTHSM_MODULE, error_code
        from token_drivers.keys import open_key

        by_label = error_code(open_key, SOFTHSM_MODULE, pin="123456", token_label="qsign-keys",
                              key_label="twin-key")
        with open_key(SOFTHSM_MODULE, pin="123456", token_label="qsign-keys", key_label="twin-key",
                      key_id=bytes.fromhex("02")) as key:
            chosen_id = key.key_id.hex()
            signature_length = len(key.sign(b"message"))
        result = {"by_label": by_label, "chosen_id": chosen_id, "signature_length": signature_length}
    """)

    assert result["by_label"] == "key_ambiguous"
    assert result["chosen_id"] == "02"
    assert result["signature_length"] > 0


def test_token_deleted_while_key_is_open(tmp_path: Path) -> None:
    """SoftHSM2 2.6.1 returns CKR_OBJECT_HANDLE_INVALID from C_SignInit once the token is gone."""
    rig = SoftHsmDir.create(tmp_path)
    rig.init_token("qsign-leaving")
    rig.init_token("qsign-staying")
    rig.provision("qsign-leaving", [KeyRequest("leaving-ec", "01", algorithm="ec")])
    rig.provision("qsign-staying", [KeyRequest("staying-ec", "01", algorithm="ec")])

    result = rig.run_python("""
        import subprocess
        from helpers.softhsm_rig import SOFTHSM_MODULE, error_code
        from token_drivers.errors import TokenError
        from token_drivers.keys import open_key

        leaving = open_key(SOFTHSM_MODULE, pin="123456", token_label="qsign-leaving", key_label="leaving-ec")
        staying = open_key(SOFTHSM_MODULE, pin="123456", token_label="qsign-staying", key_label="staying-ec")
        leaving.sign(b"before the deletion")

        subprocess.run(["softhsm2-util", "--delete-token", "--token", "qsign-leaving"], check=True,
                       capture_output=True)
        try:
            leaving.sign(b"after the deletion")
            code, ckr = "ok", None
        except TokenError as error:
            code, ckr = error.code, type(error.__cause__).__name__
        result = {
            "code": code,
            "ckr": ckr,
            "reopen": error_code(open_key, SOFTHSM_MODULE, pin="123456", token_label="qsign-leaving",
                                 key_label="leaving-ec"),
            "other_token": len(staying.sign(b"the other token is untouched")) > 0,
        }
    """)

    assert result["ckr"] == "ObjectHandleInvalid"
    assert result["code"] == "device_removed"
    assert result["reopen"] == "token_not_present"
    assert result["other_token"] is True


def test_chinese_label_and_subject_in_tokens_json(tmp_path: Path) -> None:
    token_label = "示例市税务局令牌"
    key_label = "电子公章"
    common_name = "示例市税务局电子印章"
    rig = SoftHsmDir.create(tmp_path / "softhsm")
    rig.init_token(token_label)
    rig.provision(token_label, [KeyRequest(key_label, "0a0b", algorithm="ec", certificate_cn=common_name,
                                           certificate_id="0a0b")])
    state_dir = _state_dir_for(rig, tmp_path / "state")

    for login_args in ((), ("--login", token_label)):
        tokens = _tokens_json(state_dir, *login_args)
        token = next(token for token in tokens if token["label"] == token_label)
        assert [key["label"] for key in token["keys"]] == [key_label]
        certificate = token["keys"][0]["certificate"]
        assert certificate["subject"] == f"Common Name: {common_name}"
        assert certificate["label"] == key_label
        assert token["logged_in"] is bool(login_args)

    table = run_qsign("tokens", "--lang", "zh_CN", state_dir=state_dir)
    assert table.returncode == 0, table.stderr
    assert token_label in table.stdout
    assert common_name in table.stdout


# Each row: key label, key CKA_ID, certificate CKA_ID, how the key must pair.
PAIRING_CASES = [
    ("same-id", "0a", "0a", "id"),
    ("other-id", "0b", "0c", "public_key"),
    ("no-id", "", "", "public_key"),
]


def test_keys_pair_with_certificates(tmp_path: Path) -> None:
    rig = SoftHsmDir.create(tmp_path / "softhsm")
    rig.init_token("qsign-pairing")
    requests = [KeyRequest(label, key_id, algorithm="ec", certificate_cn=f"CN of {label}",
                           certificate_id=certificate_id)
                for label, key_id, certificate_id, _ in PAIRING_CASES]
    # The certificate of "swapped" carries the CKA_ID of "id-clash": a CKA_ID match whose public
    # key differs must not pair.
    requests += [KeyRequest("id-clash", "0e", algorithm="ec"),
                 KeyRequest("swapped", "0f", algorithm="ec", certificate_cn="CN of swapped", certificate_id="0e")]
    rig.provision("qsign-pairing", requests)
    state_dir = _state_dir_for(rig, tmp_path / "state")
    expected = {label: (f"Common Name: CN of {label}", paired_by) for label, _, _, paired_by in PAIRING_CASES}
    expected["id-clash"] = (None, None)
    expected["swapped"] = ("Common Name: CN of swapped", "public_key")

    for login_args in ((), ("--login", "qsign-pairing")):
        token = _tokens_json(state_dir, *login_args)[0]
        pairs = {key["label"]: (key["certificate"]["subject"] if key["certificate"] else None, key["paired_by"])
                 for key in token["keys"]}
        assert pairs == expected, f"login args {login_args}"

    opened = rig.run_python("""
        from helpers.softhsm_rig import SOFTHSM_MODULE
        from token_drivers.keys import open_key

        result = {}
        for label in params["labels"]:
            with open_key(SOFTHSM_MODULE, pin="123456", token_label="qsign-pairing", key_label=label) as key:
                certificate = key.info.certificate
                result[label] = [certificate.subject if certificate else None, key.info.paired_by]
    """, labels=sorted(expected))
    assert {label: tuple(pair) for label, pair in opened.items()} == expected


def test_key_deleted_while_open_is_key_not_found(tmp_path: Path) -> None:
    rig = SoftHsmDir.create(tmp_path)
    rig.init_token("qsign-keys")
    rig.provision("qsign-keys", [KeyRequest("doomed-ec", "01", algorithm="ec")])

    result = rig.run_python("""
        from pkcs11 import ObjectClass
        from helpers.softhsm_rig import SOFTHSM_MODULE, error_code
        from token_drivers.keys import find_token, open_key

        key = open_key(SOFTHSM_MODULE, pin="123456", token_label="qsign-keys", key_label="doomed-ec")
        key.sign(b"before the deletion")
        with key.module.lock:
            token = find_token(key.module, token_label="qsign-keys")
            with token.open(rw=True) as session:
                session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="doomed-ec").destroy()
        result = error_code(key.sign, b"after the deletion")
    """)

    assert result == "key_not_found"
