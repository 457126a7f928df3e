"""Shared fixtures: the SoftHSM2 state dir of the test session and a runner for the ``qsign`` CLI.

A PKCS#11 module is initialised once per process, with the ``SOFTHSM2_CONF`` of that moment. Tests
in this process therefore use the tokens of ``softhsm_state``. A test that needs other tokens runs
``qsign`` in a subprocess with its own ``--state-dir`` through ``run_qsign``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

#: Seconds a ``qsign`` subprocess may run before the test fails.
QSIGN_TIMEOUT = 120


def run_qsign(*args: str, state_dir: Path | str | None = None, env: Mapping[str, str] | None = None,
              input: str | None = None, timeout: float = QSIGN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``qsign ARGS`` in a subprocess and return it with its stdout and stderr as text.

    ``state_dir`` is appended as ``--state-dir``, so pass the subcommand path first (the option
    belongs to the subcommand). ``env`` adds to or overrides the inherited environment. The exit
    status is not checked: assert on ``returncode`` in the test.
    """
    command = [sys.executable, "-m", "qsign.cli", *args]
    if state_dir is not None:
        command += ["--state-dir", str(state_dir)]

    environment = dict(os.environ)
    environment.update(env or {})
    return subprocess.run(command, env=environment, input=input, capture_output=True, text=True,
                          encoding="utf-8", timeout=timeout, check=False)


@pytest.fixture(scope="session")
def softhsm_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a state dir made by ``qsign softhsm init`` once for the whole test session."""
    state_dir = tmp_path_factory.mktemp("softhsm-state")
    completed = run_qsign("softhsm", "init", "--json", state_dir=state_dir)
    assert completed.returncode == 0, f"qsign softhsm init failed:\n{completed.stdout}\n{completed.stderr}"
    return state_dir


@pytest.fixture(scope="module")
def pki_services(tmp_path_factory: pytest.TempPathFactory):
    """Return a state dir of the test module's own whose test PKI (OCSP, CRLs, TSA) certomancer's
    animator serves on 127.0.0.1 (``helpers.pki_rig.PkiServices``); stopped after the module."""
    from helpers.pki_rig import init_pki_state

    services = init_pki_state(tmp_path_factory.mktemp("pki-state"))
    yield services
    services.stop()
