"""The test PKI's services over HTTP on 127.0.0.1, served by certomancer's animator.

The animator serves what ``pki/certomancer.yml`` configures (see ``softhsm_setup/certomancer.yml``),
at certomancer's paths under the base URL (``PkiUrls`` builds them):

- ``POST /qsign-test/ocsp/root`` and ``/qsign-test/ocsp/intermediate``: OCSP;
- ``GET /qsign-test/crls/root/latest.crl`` and ``/qsign-test/crls/intermediate/latest.crl``: CRLs;
- ``GET /qsign-test/certs/root/ca.crt`` and ``/qsign-test/certs/intermediate/ca.crt``: CA certificates;
- ``POST /qsign-test/tsa/tsa``: RFC 3161 time-stamp responses.

The configuration is read again when the file changes, so a certificate revoked with
``softhsm_setup.ltv_pki.revoke_certificate`` shows as revoked at the next request. ``at_time``
moves the services' clock (certomancer's time travel): OCSP responses, CRLs and timestamps are then
made for that time.
"""

from __future__ import annotations

import datetime
import logging
import threading
from pathlib import Path
from typing import Any

from certomancer.integrations.animator import Animator, AnimatorArchStore
from certomancer.registry import CertomancerConfig
from werkzeug.serving import make_server

from softhsm_setup.layout import StateLayout
from softhsm_setup.ltv_pki import PkiUrls
from softhsm_setup.pki import load_rendered_config

__all__ = ["PkiServer", "ReloadingAnimator"]

_logger = logging.getLogger(__name__)


class ReloadingAnimator:
    """certomancer's animator for ``pki/certomancer.yml``, rebuilt when the file changes (a WSGI app)."""

    def __init__(self, layout: StateLayout) -> None:
        self.layout = layout
        self.at_time: datetime.datetime | None = None
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._animator: Animator | None = None
        self._current()

    def _current(self) -> Animator:
        stat = self.layout.certomancer_config.stat()
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._animator is None or signature != self._signature:
                config = CertomancerConfig(load_rendered_config(self.layout),
                                           key_search_dir=str(self.layout.pki_dir))
                # No web UI: its pages are English only, and nothing here needs them.
                self._animator = Animator(AnimatorArchStore(config.pki_archs), with_web_ui=False,
                                          allow_time_override=False)
                self._signature = signature
                _logger.info("loaded %s", self.layout.certomancer_config)
            self._animator.fixed_time = self.at_time
            return self._animator

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self._current()(environ, start_response)


class PkiServer:
    """The animator of a state dir served by werkzeug on ``host``:``port`` in a background thread."""

    def __init__(self, state_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.layout = StateLayout(Path(state_dir))
        self.app = ReloadingAnimator(self.layout)
        self._server = make_server(host, port, self.app, threaded=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def urls(self) -> PkiUrls:
        return PkiUrls(f"http://{self._server.server_address[0]}:{self.port}")

    @property
    def at_time(self) -> datetime.datetime | None:
        """The time the services build responses for; ``None`` (the default) is the current time."""
        return self.app.at_time

    @at_time.setter
    def at_time(self, value: datetime.datetime | None) -> None:
        self.app.at_time = value

    def serve_forever(self) -> None:
        _logger.info("serving the test PKI of %s on %s", self.layout.state_dir, self.urls.base_url)
        self._server.serve_forever()

    def start(self) -> PkiServer:
        self._thread = threading.Thread(target=self.serve_forever, name="qsign-pki-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Close the listening socket of a server that ``serve_forever`` ran in this thread."""
        self._server.server_close()

    def stop(self) -> None:
        """Stop serving and close the listening socket; requests after this fail to connect."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        _logger.info("stopped the test PKI server on %s", self.urls.base_url)
