"""PIN-state codes (``pin_final_try``, ``pin_locked``, ``pin_expired``) on openCryptoki's software token.

SoftHSM2 2.6.1 never locks a user PIN, so these codes come from openCryptoki 3.8.1 (Debian 12
package ``opencryptoki``), whose software token "swtok" counts failures. Measured here: one wrong
PIN sets ``CKF_USER_PIN_COUNT_LOW``, two set ``CKF_USER_PIN_FINAL_TRY``, and three set
``CKF_USER_PIN_LOCKED``, after which ``C_Login`` returns ``CKR_PIN_LOCKED``. A freshly initialised
token has ``CKF_USER_PIN_TO_BE_CHANGED`` until the security officer sets the user PIN.

openCryptoki's paths are fixed at build time (``/etc/opencryptoki``, ``/var/lib/opencryptoki``,
``/var/lock/opencryptoki``, ``/var/run/pkcsslotd.*``), so this cannot run in a temporary directory.
The fixture needs root. It starts ``pkcsslotd`` when it is not running (and stops it afterwards),
and uses the machine's swtok token only when it is uninitialised or already carries ``TOKEN_LABEL``.
Each test runs the module in a subprocess, because the fixture may restart the daemon.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.softhsm_rig import run_python, subprocess_env

PKCSSLOTD = "/usr/sbin/pkcsslotd"
PKCSCONF = "/usr/sbin/pkcsconf"
PID_FILE = Path("/var/run/pkcsslotd.pid")
SWTOK_DIR = Path("/var/lib/opencryptoki/swtok")
#: Directories that systemd-tmpfiles makes from the package's tmpfiles.d entry; no systemd runs here.
RUNTIME_DIRS = (Path("/var/lock/opencryptoki"), Path("/var/lock/opencryptoki/swtok"), Path("/var/log/opencryptoki"))
#: Held while a test session uses swtok, so that two pytest runs on one machine take turns.
RUN_LOCK = Path("/var/lock/qsign-opencryptoki-tests.lock")
#: Security officer PIN of a freshly initialised openCryptoki token.
DEFAULT_SO_PIN = "87654321"

TOKEN_LABEL = "qsign-ock-test"
SO_PIN = "13572468"
USER_PIN = "246810"
WRONG_PIN = "975310"



def _module_path() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/pkcs11/libopencryptoki.so"))
    return found[0] if found else None


MODULE = _module_path()


@dataclass
class SwToken:
    """The swtok slot as ``pkcsconf -t`` reports it."""

    slot: int
    label: str
    flags: int

    @property
    def initialized(self) -> bool:
        return bool(self.flags & 0x400)  # CKF_TOKEN_INITIALIZED


def _pkcsconf(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run([PKCSCONF, *args], capture_output=True, text=True, timeout=60,
                               input="", check=False)
    if check:
        assert completed.returncode == 0, f"pkcsconf {' '.join(args)} failed:\n{completed.stdout}{completed.stderr}"
    return completed


def _read_swtok() -> SwToken:
    output = _pkcsconf("-t").stdout
    for block in re.split(r"(?=^Token #\d+ Info:)", output, flags=re.MULTILINE):
        if "IBM SoftTok" not in block:
            continue
        slot = int(re.search(r"^Token #(\d+) Info:", block, re.MULTILINE).group(1))
        label = re.search(r"Label: (.*)$", block, re.MULTILINE).group(1).strip()
        flags = int(re.search(r"Flags: 0x([0-9A-Fa-f]+)", block).group(1), 16)
        return SwToken(slot, label, flags)
    pytest.skip(f"pkcsconf lists no IBM SoftTok (swtok) token:\n{output}")


def _daemon_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "pkcsslotd" else None


def _start_daemon() -> None:
    for directory in RUNTIME_DIRS:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(directory, group="pkcs11")
        directory.chmod(0o770)
    subprocess.run([PKCSSLOTD], check=True, timeout=60)
    deadline = time.monotonic() + 10
    while _daemon_pid() is None:
        assert time.monotonic() < deadline, "pkcsslotd did not write its pid file"
        time.sleep(0.05)


def _stop_daemon() -> None:
    pid = _daemon_pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"pkcsslotd {pid} did not stop"
        time.sleep(0.05)


class OpenCryptoki:
    """The machine's openCryptoki swtok token, set up for these tests."""

    def __init__(self, owns_daemon: bool) -> None:
        self.owns_daemon = owns_daemon

    def wipe_and_initialize(self) -> None:
        """Remove the swtok token's data, restart the daemon and run C_InitToken; no user PIN yet.

        openCryptoki 3.8.1 has no working re-initialisation here: after ``pkcsconf -I`` on an
        initialised swtok token the security officer's login fails with CKR_FUNCTION_FAILED. So
        the token's files and shared memory are removed instead, with the daemon stopped.
        """
        _stop_daemon()
        for name in ("MK_SO", "MK_USER", "NVTOK.DAT"):
            (SWTOK_DIR / name).unlink(missing_ok=True)
        for path in (SWTOK_DIR / "TOK_OBJ").glob("*"):
            path.unlink()
        Path("/dev/shm/var.lib.opencryptoki.swtok").unlink(missing_ok=True)
        _start_daemon()

        # ``pkcsconf -I`` reads the label from the terminal; on a fresh Debian 12 chroot with no terminal it
        # wrote a blank label. C_InitToken through ctypes sets the label directly.
        slot = _read_swtok().slot
        init_token = _INIT_TOKEN.format(module=MODULE, slot=slot, so_pin=DEFAULT_SO_PIN, label=TOKEN_LABEL)
        completed = subprocess.run([sys.executable, "-c", init_token], capture_output=True, text=True,
                                   timeout=60, check=False)
        assert completed.returncode == 0, f"C_InitToken failed:\n{completed.stdout}{completed.stderr}"
        assert _read_swtok().label == TOKEN_LABEL

    def set_pins(self) -> None:
        """Change the security officer PIN from the default and set the user PIN."""
        slot = str(_read_swtok().slot)
        _pkcsconf("-P", "-c", slot, "-S", DEFAULT_SO_PIN, "-n", SO_PIN)
        _pkcsconf("-u", "-c", slot, "-S", SO_PIN, "-n", USER_PIN)

    def reset_user_pin(self) -> bool:
        """Set the user PIN again as security officer, which clears the failure counter."""
        return _pkcsconf("-u", "-c", str(_read_swtok().slot), "-S", SO_PIN, "-n", USER_PIN,
                         check=False).returncode == 0

    def run(self, code: str, **params: Any) -> Any:
        """Run ``code`` in a subprocess with ``MODULE``, ``TOKEN_LABEL`` and the PINs defined."""
        prelude = (f"MODULE = {MODULE!r}\nTOKEN_LABEL = {TOKEN_LABEL!r}\n"
                   f"USER_PIN = {USER_PIN!r}\nWRONG_PIN = {WRONG_PIN!r}\n")
        return run_python(prelude + code, subprocess_env(), **params)


# Runs C_Initialize, C_InitToken and C_Finalize on the swtok slot in a subprocess of its own.
_INIT_TOKEN = """
import ctypes
library = ctypes.CDLL({module!r})
assert library.C_Initialize(None) == 0
so_pin = {so_pin!r}.encode()
label = {label!r}.encode().ljust(32, b" ")
rv = library.C_InitToken(ctypes.c_ulong({slot}), so_pin, ctypes.c_ulong(len(so_pin)), label)
library.C_Finalize(None)
assert rv == 0, hex(rv)
"""


@pytest.fixture(scope="module")
def opencryptoki() -> Iterator[OpenCryptoki]:
    if MODULE is None or not os.path.exists(PKCSSLOTD) or not os.path.exists(PKCSCONF):
        pytest.skip("openCryptoki is not installed (Debian package opencryptoki)")
    if os.geteuid() != 0:
        pytest.skip("openCryptoki 3.8.1 keeps its token in /var/lib/opencryptoki and its daemon socket "
                    "in /var/run; setting them up needs root")

    with RUN_LOCK.open("a") as run_lock:
        _wait_for_lock(run_lock)
        yield from _set_up_swtok()


def _wait_for_lock(handle: Any, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            assert time.monotonic() < deadline, f"another test run held {RUN_LOCK} for {timeout} s"
            time.sleep(0.2)


def _set_up_swtok() -> Iterator[OpenCryptoki]:
    owns_daemon = _daemon_pid() is None
    if owns_daemon:
        _start_daemon()
    rig = OpenCryptoki(owns_daemon)

    token = _read_swtok()
    if token.initialized and token.label != TOKEN_LABEL:
        if owns_daemon:
            _stop_daemon()
        pytest.skip(f"the swtok token is labelled {token.label!r}, not {TOKEN_LABEL!r}; "
                    "it may hold someone's keys, so the tests leave it alone")
    if not token.initialized or not rig.reset_user_pin():
        rig.wipe_and_initialize()
        rig.set_pins()

    yield rig

    if rig.owns_daemon:
        _stop_daemon()


@pytest.fixture
def swtok(opencryptoki: OpenCryptoki) -> Iterator[OpenCryptoki]:
    """The swtok token with the user PIN set and no failed attempts, before and after the test."""
    assert opencryptoki.reset_user_pin()
    yield opencryptoki
    assert opencryptoki.reset_user_pin()


# Opens the token with ``pin`` and returns the error code (``key_not_found`` means the login
# succeeded, because the token has no keys) and the PIN flags afterwards.
_ATTEMPT = """
from helpers.softhsm_rig import error_code
from token_drivers.inventory import list_slots
from token_drivers.keys import open_key
from token_drivers.module import load_module

def pin_flags():
    return next(slot.token.pin.as_dict() for slot in list_slots(load_module(MODULE))
                if slot.token is not None and slot.token.label == TOKEN_LABEL)

def attempt(pin, allow_final_try=False):
    code = error_code(open_key, MODULE, pin=pin, token_label=TOKEN_LABEL, key_label="absent",
                      allow_final_try=allow_final_try)
    return {"code": code, "pin": pin_flags()}
"""


def test_final_try_is_not_attempted(swtok: OpenCryptoki) -> None:
    """On the final try qsign does not log in unless asked to, so the counter does not move."""
    steps = swtok.run(_ATTEMPT + """
result = [attempt(WRONG_PIN), attempt(WRONG_PIN),
          attempt(WRONG_PIN), attempt(USER_PIN),
          attempt(USER_PIN, allow_final_try=True)]
""")

    assert [step["code"] for step in steps] == [
        "pin_incorrect", "pin_incorrect", "pin_final_try", "pin_final_try", "key_not_found"]
    assert steps[0]["pin"]["count_low"]
    # After the refusals the token is still on its final try, not locked: no C_Login happened.
    for step in steps[1:4]:
        assert step["pin"]["final_try"]
        assert not step["pin"]["locked"]
    # The confirmed final try with the right PIN logs in, which resets the counter.
    assert steps[4]["pin"] == {"count_low": False, "final_try": False, "locked": False, "to_be_changed": False}


def test_locked_pin_is_pin_locked(swtok: OpenCryptoki) -> None:
    result = swtok.run(_ATTEMPT + """
from token_drivers.errors import TokenError, pkcs11_errors
from token_drivers.keys import find_token
from token_drivers.login import CKU_USER, c_login

steps = [attempt(WRONG_PIN, allow_final_try=True) for _ in range(3)]
steps.append(attempt(USER_PIN))

# C_Login itself, past qsign's check of the flags.
module = load_module(MODULE)
with module.lock:
    session = find_token(module, token_label=TOKEN_LABEL).open()
    try:
        with pkcs11_errors(token=TOKEN_LABEL):
            c_login(module, session.handle, CKU_USER, USER_PIN)
        login = {"code": "ok", "ckr": None}
    except TokenError as error:
        login = {"code": error.code, "ckr": type(error.__cause__).__name__}
    session.close()
result = {"steps": steps, "login": login}
""")
    steps = result["steps"]

    assert [step["code"] for step in steps] == ["pin_incorrect", "pin_incorrect", "pin_incorrect", "pin_locked"]
    assert steps[2]["pin"]["locked"]
    assert result["login"] == {"code": "pin_locked", "ckr": "PinLocked"}


def test_uninitialized_user_pin_is_pin_expired(opencryptoki: OpenCryptoki) -> None:
    """A token just initialised has CKF_USER_PIN_TO_BE_CHANGED until the user PIN is set."""
    opencryptoki.wipe_and_initialize()
    try:
        result = opencryptoki.run(_ATTEMPT + "result = attempt(USER_PIN)\n")
    finally:
        opencryptoki.set_pins()

    assert result["pin"]["to_be_changed"]
    assert result["code"] == "pin_expired"
