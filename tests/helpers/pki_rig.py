"""A state dir whose test PKI is served by certomancer's animator on a free port of 127.0.0.1.

``qsign softhsm init --pki-base-url`` writes that port into the certificates' OCSP, CRL and CA issuer
URLs and into ``[tsa] url``, so signing and verifying in the state dir talk to ``PkiServices``. A
test may stop the services (responders and TSA down) and start them again on the same port.
"""

from __future__ import annotations

import socket
from pathlib import Path

from conftest import run_qsign
from softhsm_setup.pki_server import PkiServer

__all__ = ["free_port", "PkiServices", "init_pki_state"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PkiServices:
    """The animator of ``state_dir`` on ``port``, which a test may stop and start again."""

    def __init__(self, state_dir: Path, port: int) -> None:
        self.state_dir, self.port = state_dir, port
        self.server: PkiServer | None = None

    def start(self) -> PkiServices:
        if self.server is None:
            self.server = PkiServer(self.state_dir, "127.0.0.1", self.port).start()
        return self

    def stop(self) -> PkiServices:
        if self.server is not None:
            self.server.stop()
            self.server = None
        return self


def init_pki_state(state_dir: Path) -> PkiServices:
    """Run ``qsign softhsm init`` in ``state_dir`` for a free port and return its services, started."""
    port = free_port()
    completed = run_qsign("softhsm", "init", "--json", "--pki-base-url", f"http://127.0.0.1:{port}",
                          state_dir=state_dir)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return PkiServices(state_dir, port).start()
