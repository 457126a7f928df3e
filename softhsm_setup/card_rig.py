"""The virtual smart-card rig: pcscd with vpcd in a private network namespace, and libcacard cards.

``qsign softhsm card up`` creates the network namespace, which has only a loopback interface, so
vpcd's ports (bound on all interfaces) are reachable from nowhere else. It starts pcscd in it with a
reader config under the state dir, and makes the NSS databases of two virtual CAC cards whose
certificates the state dir's test CA issues. pcscd's socket directory is a private bind mount of
``<state>/card/run`` over ``/run/pcscd`` inside the namespace's mount namespace, so a system pcscd is
left alone, and clients outside reach the rig's pcscd by ``PCSCLITE_CSOCK_NAME`` (``[pcsc] socket``
in ``qsign.toml``). ``card tap`` starts a bridge process (``softhsm_setup.cacard_bridge``) in the
namespace that connects a card to one vpcd reader; ``card remove`` stops it; ``card down`` stops
everything and deletes the namespace. All of it needs root (``ip netns``, ``mount``).
"""

from __future__ import annotations

import ctypes
import datetime
import enum
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from qsign.config import load_config, write_config
from qsign.errors import QsignError
from qsign.i18n import N_
from softhsm_setup.files import ensure_directory, write_file
from softhsm_setup.layout import StateLayout
from softhsm_setup.ltv_pki import DEFAULT_PKI_BASE_URL, PkiUrls
from softhsm_setup.pki import certificate_pem, ensure_test_pki, write_public_key
from softhsm_setup.specs import CertificateRole, KeyAlgorithm, KeySpec
from token_drivers.module import OPENSC_MODULE_CANDIDATES, find_installed_module

__all__ = ["CardSpec", "CARDS", "CardRig", "RigError", "VPCD_BASE_PORT", "READER_COUNT", "netns_socket",
           "DEFAULT_NAMESPACE", "card_rig_unavailable_reason"]

_logger = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "qsign-card"
#: vpcd (Debian vsmartcard-vpcd 3.3, libifdvpcd.so 0.8) offers two readers, on ports 35963 and 35964.
VPCD_BASE_PORT = 35963
READER_COUNT = 2
#: Reader names pcscd gives vpcd's two slots with the ``FRIENDLYNAME`` this rig writes.
READER_NAME_PREFIX = "Virtual PCD"
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
_CLONE_NEWNET = 0x40000000
_START_TIMEOUT = 10.0


class RigError(QsignError):
    code = "card_rig_failed"
    message_template = N_("The virtual card rig failed: {detail}")


@dataclass(frozen=True)
class CardSpec:
    """A virtual CAC card: its NSS database contains one RSA-2048 key and its certificate."""

    name: str
    nickname: str
    common_name: str

    @property
    def certificate_label(self) -> str:
        """The card's key and certificate label in ``softhsm_setup/certomancer.yml``."""
        return f"card-{self.name}"

    def key_spec(self) -> KeySpec:
        return KeySpec(profile=f"card_{self.name}", token_label=self.common_name, label=self.nickname,
                       key_id=b"", algorithm=KeyAlgorithm.RSA, bits=2048, curve=None, always_authenticate=False,
                       role=CertificateRole.OFFICER, common_name=self.common_name)


#: ``officer`` is the officer's card; ``other`` is a second person's card (the wrong card in tests).
CARDS: dict[str, CardSpec] = {
    "officer": CardSpec(name="officer", nickname="qsign-card-officer", common_name="赵敏"),
    "other": CardSpec(name="other", nickname="qsign-card-other", common_name="刘洋"),
}

#: PIN of both virtual cards (the NSS database password); test set-ups only, as this file publishes it.
CARD_PIN = "24681357"


class Step(enum.Enum):
    """Outcome of one step of a rig command, for its report."""

    CREATED = "created"
    EXISTS = "exists"
    STARTED = "started"
    RUNNING = "running"
    STOPPED = "stopped"
    NOT_RUNNING = "not_running"
    DELETED = "deleted"


def card_rig_unavailable_reason() -> str | None:
    """Return why the rig cannot run on this machine, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "the card rig needs root (ip netns, mount)"
    for program in ("ip", "pcscd", "certutil", "pk12util"):
        if shutil.which(program) is None:
            return f"the program {program} is not installed"
    if not os.path.exists(VPCD_DRIVER):
        return f"vpcd is not installed ({VPCD_DRIVER} is missing)"
    # ip netns exec needs more than ip netns list: it remounts / as a slave, which fails where / is
    # not a mount point (a plain chroot). A short-lived namespace shows whether both work.
    name = f"qsign-probe-{os.getpid()}"
    steps = (["ip", "netns", "add", name], ["ip", "netns", "exec", name, "true"])
    try:
        for step in steps:
            probe = subprocess.run(step, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if probe.returncode != 0:
                return f"ip netns is unavailable: {' '.join(step[:3])} failed: {probe.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, stdin=subprocess.DEVNULL)
    return None


def netns_socket(namespace: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """Create a socket inside the network namespace ``namespace`` and return it.

    A socket belongs to the network namespace its creator was in, so a short-lived thread joins the
    namespace with ``setns`` (which changes only the calling thread) and creates it. The socket
    then works from any thread; in-process servers and clients reach the rig's loopback this way.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    result: list[socket.socket | BaseException] = []

    def create() -> None:
        try:
            with open(f"/run/netns/{namespace}", "rb") as handle:
                if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, f"setns into {namespace}: {os.strerror(error)}")
            result.append(socket.socket(family, kind))
        except BaseException as error:  # handed to the caller's thread below
            result.append(error)

    thread = threading.Thread(target=create, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class CardRig:
    """The rig of one state dir. Every method is idempotent and returns what it did."""

    def __init__(self, state_dir: Path, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.state_dir = Path(state_dir)
        self.namespace = namespace
        self.layout = StateLayout(self.state_dir)
        self.card_dir = self.state_dir / "card"
        self.run_dir = self.card_dir / "run"
        self.reader_conf_dir = self.card_dir / "reader.conf.d"
        self.pin_file = self.state_dir / "secrets" / "card.pin"

    # ----- paths

    @property
    def socket_path(self) -> Path:
        """pcscd's socket, which clients name in ``PCSCLITE_CSOCK_NAME``."""
        return self.run_dir / "pcscd.comm"

    def nss_db(self, card: CardSpec) -> Path:
        return self.card_dir / card.name / "nssdb"

    def certificate_path(self, card: CardSpec) -> Path:
        return self.layout.pki_dir / f"{card.nickname}.pem"

    def _pid_file(self, name: str) -> Path:
        return self.card_dir / f"{name}.pid"

    @staticmethod
    def reader_name(reader: int) -> str:
        return f"{READER_NAME_PREFIX} 00 {reader:02d}"

    # ----- up

    def up(self) -> dict[str, Step]:
        """Make the cards, the namespace and pcscd; return what each step did."""
        report: dict[str, Step] = {}
        ensure_directory(self.card_dir, 0o755)
        ensure_directory(self.run_dir, 0o755)
        ensure_directory(self.layout.pki_dir, 0o755)

        now = datetime.datetime.now(datetime.timezone.utc)
        for card in CARDS.values():
            report[f"card {card.name}"] = self._make_card(card, now)
        self._write_reader_conf()
        self._write_config()

        report["namespace"] = self._create_namespace()
        report["pcscd"] = self._start_pcscd()
        return report

    def _make_card(self, card: CardSpec, now: datetime.datetime) -> Step:
        database = self.nss_db(card)
        if (database / "cert9.db").exists() and self.certificate_path(card).exists():
            return Step.EXISTS

        if database.exists():
            shutil.rmtree(database)
        ensure_directory(database, 0o700)
        ensure_directory(self.pin_file.parent, 0o700)
        write_file(self.pin_file, CARD_PIN.encode(), 0o600)

        # certomancer issues the card's certificate from softhsm_setup/certomancer.yml like the token
        # keys' ones: the public key goes into pki/, and a new key gets a new serial number.
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        label = card.certificate_label
        write_public_key(self.layout, label, private_key.public_key(), [])
        pki = ensure_test_pki(self.layout, now, PkiUrls.parse(DEFAULT_PKI_BASE_URL), reissue={label})
        certificate = pki.certificate(label)
        write_file(self.certificate_path(card), certificate_pem(certificate), 0o644)

        # pk12util imports the key and certificate under the PKCS#12 friendly name, which becomes
        # the NSS nickname that libcacard's soft= option names.
        transfer_password = os.urandom(12).hex()
        bundle = pkcs12.serialize_key_and_certificates(
            card.nickname.encode(), private_key, certificate, None,
            serialization.BestAvailableEncryption(transfer_password.encode()))
        work = database.parent
        write_file(work / "import.p12", bundle, 0o600)
        write_file(work / "import.pass", transfer_password.encode(), 0o600)
        try:
            self._run(["certutil", "-N", "-d", f"sql:{database}", "-f", str(self.pin_file)])
            self._run(["pk12util", "-i", str(work / "import.p12"), "-d", f"sql:{database}",
                       "-k", str(self.pin_file), "-w", str(work / "import.pass")])
        finally:
            (work / "import.p12").unlink(missing_ok=True)
            (work / "import.pass").unlink(missing_ok=True)
        _logger.info("created virtual card %s (%s) in %s", card.name, card.common_name, database)
        return Step.CREATED

    def _write_reader_conf(self) -> None:
        ensure_directory(self.reader_conf_dir, 0o755)
        text = (f'FRIENDLYNAME "{READER_NAME_PREFIX}"\n'
                f"DEVICENAME   /dev/null:0x{VPCD_BASE_PORT:04X}\n"
                f"LIBPATH      {VPCD_DRIVER}\n"
                f"CHANNELID    0x{VPCD_BASE_PORT:04X}\n")
        write_file(self.reader_conf_dir / "vpcd", text.encode(), 0o644)

    def _write_config(self) -> None:
        """Record the rig's pcscd socket and the officer card profile in ``qsign.toml``."""
        config = load_config(self.state_dir)
        raw = dict(config.raw)
        raw.setdefault("pcsc", {})["socket"] = "card/run/pcscd.comm"
        raw.setdefault("trust", {"anchors": [self.layout.relative(self.layout.root_certificate)],
                                 "intermediates": [self.layout.relative(self.layout.intermediate_certificate)]})
        opensc = find_installed_module(OPENSC_MODULE_CANDIDATES)
        if opensc is not None:
            officer = CARDS["officer"]
            raw.setdefault("tokens", {})["card_officer"] = {
                "module": opensc, "token": officer.common_name, "key": "CAC ID Certificate",
                "pin_file": "secrets/card.pin"}
        write_config(self.layout.config_path, raw)

    def _create_namespace(self) -> Step:
        if Path(f"/run/netns/{self.namespace}").exists():
            return Step.EXISTS
        self._run(["ip", "netns", "add", self.namespace])
        self._run(["ip", "-n", self.namespace, "link", "set", "lo", "up"])
        _logger.info("created network namespace %s", self.namespace)
        return Step.CREATED

    def _start_pcscd(self) -> Step:
        if self._alive("pcscd"):
            if self.socket_path.exists():
                return Step.RUNNING
            # A pcscd that never made its socket (a start that timed out) would keep /run/pcscd's
            # pid file and compete with the new one.
            self._stop("pcscd")
        self.socket_path.unlink(missing_ok=True)
        (self.run_dir / "pcscd.pid").unlink(missing_ok=True)
        os.makedirs("/run/pcscd", exist_ok=True)

        # ip netns exec gives the command its own mount namespace, so this bind mount is seen by
        # pcscd only. pcscd 1.9 has /run/pcscd built in and has no option to move its socket.
        script = f'mount --bind "$1" /run/pcscd && exec pcscd --foreground -c "$2"'
        log = open(self.card_dir / "pcscd.log", "ab")
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, "sh", "-c", script, "sh", str(self.run_dir),
             str(self.reader_conf_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._pid_file("pcscd").write_text(str(process.pid))

        deadline = time.monotonic() + _START_TIMEOUT
        while not self.socket_path.exists():
            if process.poll() is not None:
                raise RigError(detail=f"pcscd exited with status {process.returncode}; "
                                      f"see {self.card_dir / 'pcscd.log'}")
            if time.monotonic() > deadline:
                raise RigError(detail=f"pcscd did not create {self.socket_path} within {_START_TIMEOUT:.0f} s")
            time.sleep(0.02)
        self._wait_for_ports(process.pid)
        _logger.info("started pcscd (pid %d) in namespace %s", process.pid, self.namespace)
        return Step.STARTED

    def _wait_for_ports(self, pid: int) -> None:
        """Wait until vpcd in pcscd ``pid`` listens on every reader's port.

        The check reads the listening sockets of pcscd's network namespace from ``/proc/PID/net/tcp*``
        instead of connecting, because vpcd would take a test connection for a card.
        """
        wanted = {f"{VPCD_BASE_PORT + reader:04X}" for reader in range(READER_COUNT)}
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            listening = set()
            for table in ("tcp", "tcp6"):
                try:
                    lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
                except FileNotFoundError:
                    continue
                for line in lines:
                    fields = line.split()
                    if fields[3] == "0A":  # TCP_LISTEN
                        listening.add(fields[1].rsplit(":", 1)[1])
            if wanted <= listening:
                return
            if time.monotonic() > deadline:
                raise RigError(detail=f"vpcd is not listening on ports {VPCD_BASE_PORT}-"
                                      f"{VPCD_BASE_PORT + READER_COUNT - 1} after {_START_TIMEOUT:.0f} s")
            time.sleep(0.02)

    # ----- tap and remove

    def tap(self, card_name: str = "officer", reader: int = 0, atr: bytes | None = None,
            relay: tuple[int, str, str] | None = None) -> Step:
        """Connect ``card_name`` to vpcd reader ``reader`` (0 or 1) in a bridge process.

        ``atr`` replaces the ATR the card reports. ``relay`` is ``(port, token, ca_file)`` of a qsign
        relay listening inside the namespace, to connect through it instead of to vpcd directly.
        Returns once the bridge is connected.
        """
        card = self._card(card_name)
        self._check_reader(reader)
        if self._alive(f"bridge-{reader}"):
            return Step.RUNNING

        command = ["ip", "netns", "exec", self.namespace, sys.executable, "-m", "softhsm_setup.cacard_bridge",
                   "--nss-db", str(self.nss_db(card)), "--certificate", card.nickname,
                   "--port", str(VPCD_BASE_PORT + reader)]
        environment = dict(os.environ)
        if atr is not None:
            command += ["--atr", atr.hex()]
        if relay is not None:
            port, token, ca_file = relay
            command[command.index("--port") + 1] = str(port)
            command += ["--relay-token", "-", "--relay-ca", ca_file]
            environment["QSIGN_RELAY_TOKEN"] = token

        log = open(self.card_dir / f"bridge-{reader}.log", "ab")
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                   env=environment, start_new_session=True)
        log.close()
        line = process.stdout.readline() if process.stdout else b""
        if line.strip() != b"connected":
            process.wait(timeout=5)
            raise RigError(detail=f"the card bridge did not connect (status {process.returncode}); "
                                  f"see {self.card_dir / f'bridge-{reader}.log'}")
        self._pid_file(f"bridge-{reader}").write_text(str(process.pid))
        _logger.info("tapped card %s on reader %d (bridge pid %d)", card.name, reader, process.pid)
        return Step.STARTED

    def remove(self, reader: int = 0) -> Step:
        """Disconnect the card on ``reader``: stop its bridge process."""
        self._check_reader(reader)
        return self._stop(f"bridge-{reader}")

    # ----- down

    def down(self) -> dict[str, Step]:
        """Remove every card, stop pcscd and delete the namespace."""
        report: dict[str, Step] = {}
        for reader in range(READER_COUNT):
            report[f"bridge {reader}"] = self.remove(reader)
        report["pcscd"] = self._stop("pcscd")
        if Path(f"/run/netns/{self.namespace}").exists():
            self._run(["ip", "netns", "delete", self.namespace])
            report["namespace"] = Step.DELETED
        else:
            report["namespace"] = Step.NOT_RUNNING
        return report

    def restart_pcscd(self) -> None:
        """Stop pcscd and start it again, as an administrator or a package upgrade would.

        The bridges lose their vpcd connection with the old pcscd and exit on their own. They are
        stopped here too, so that a ``tap`` right after the restart does not find one still exiting.
        """
        self._stop("pcscd")
        for reader in range(READER_COUNT):
            self.remove(reader)
        self._start_pcscd()

    # ----- helpers

    def _card(self, name: str) -> CardSpec:
        try:
            return CARDS[name]
        except KeyError:
            raise RigError(detail=f"unknown card {name!r}; the rig has {', '.join(CARDS)}") from None

    @staticmethod
    def _check_reader(reader: int) -> None:
        if not 0 <= reader < READER_COUNT:
            raise RigError(detail=f"reader {reader} does not exist; vpcd offers readers 0 to {READER_COUNT - 1}")

    def _read_pid(self, name: str) -> int | None:
        try:
            return int(self._pid_file(name).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _alive(self, name: str) -> bool:
        pid = self._read_pid(name)
        return pid is not None and self._pid_alive(pid)

    def _stop(self, name: str) -> Step:
        pid = self._read_pid(name)
        self._pid_file(name).unlink(missing_ok=True)
        if pid is None or not self._pid_alive(pid):
            return Step.NOT_RUNNING
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while self._pid_alive(pid):
            if time.monotonic() > deadline:
                _logger.warning("%s (pid %d) ignored SIGTERM; sending SIGKILL", name, pid)
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5.0
            time.sleep(0.01)
        _logger.info("stopped %s (pid %d)", name, pid)
        return Step.STOPPED

    @staticmethod
    def _pid_alive(pid: int) -> bool:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished == pid:
                return False
        except ChildProcessError:
            pass
        # A process started by an earlier qsign command is not this process's child. Once it exits it
        # may stay a zombie until its new parent reaps it, and kill(pid, 0) still succeeds on a zombie.
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return False
        return state not in ("Z", "X")

    @staticmethod
    def _run(command: list[str]) -> None:
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RigError(detail=f"{' '.join(command)} exited with status {result.returncode}: "
                                  f"{result.stderr.strip() or result.stdout.strip()}",
                           ids={"command": command[0]})
