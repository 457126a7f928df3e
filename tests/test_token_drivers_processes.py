"""Several processes opening keys on one SoftHSM2 token at the same moment, and module lookup by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from qsign.config import load_config

# Opens the seal key ROUNDS times, signing once each time, and prints the error codes it met.
_OPEN_AND_SIGN = """
import json, sys
from qsign.config import apply_environment, load_config
from token_drivers.errors import TokenError
from token_drivers.keys import open_profile_key
from pathlib import Path

config = load_config(Path(sys.argv[1]))
apply_environment(config)
codes = []
for _ in range(int(sys.argv[2])):
    try:
        with open_profile_key(config, "seal_ec") as key:
            key.sign(b"document digest")
        codes.append("ok")
    except TokenError as error:
        codes.append(error.code)
print(json.dumps(codes))
"""

PROCESSES = 4
ROUNDS = 5


def test_concurrent_processes_open_one_token(softhsm_state):
    environment = dict(os.environ)
    environment.pop("SOFTHSM2_CONF", None)
    assert load_config(softhsm_state).tokens["seal_ec"].token_label == "qsign-hsm"

    runs = [subprocess.Popen([sys.executable, "-c", _OPEN_AND_SIGN, str(softhsm_state), str(ROUNDS)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
            for _ in range(PROCESSES)]
    results = [run.communicate(timeout=120) for run in runs]

    for (stdout, stderr), run in zip(results, runs):
        assert run.returncode == 0, stderr
        assert json.loads(stdout) == ["ok"] * ROUNDS, stderr


def test_bare_module_name_resolves(tmp_path):
    from token_drivers.module import resolve_module_path

    resolved = resolve_module_path("opensc-pkcs11.so")
    listed = subprocess.run([sys.executable, "-m", "qsign.cli", "tokens", "--module", "opensc-pkcs11.so", "--json",
                             "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False)

    assert resolved.startswith("/") and resolved.endswith("/opensc-pkcs11.so")
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)
    assert resolve_module_path("no-such-module.so") == "no-such-module.so"
