"""``qsign softhsm serve-pki``: the test PKI's services in the foreground until Ctrl+C."""

from __future__ import annotations

import logging
from pathlib import Path

from qsign.config import load_config
from qsign.errors import ConfigError
from qsign.i18n import N_, translate
from softhsm_setup.layout import StateLayout
from softhsm_setup.ltv_pki import DEFAULT_PKI_BASE_URL, PkiUrls

__all__ = ["serve_pki"]

_logger = logging.getLogger(__name__)

SERVING = N_("Serving the test PKI of {state_dir} on {base_url} (Ctrl+C stops it):")
NOT_LOOPBACK = N_("pki.base_url {base_url} is not on 127.0.0.1; serve-pki listens on 127.0.0.1 only.")
NO_PKI = N_("The state dir {state_dir} has no test PKI with a TSA certificate. Run \"qsign softhsm init\" first.")


def serve_pki(state_dir: Path, language: str) -> int:
    """Serve OCSP, CRLs, CA certificates and the TSA of ``state_dir`` at its ``[pki] base_url``
    with certomancer's animator."""
    from softhsm_setup.pki_server import PkiServer

    layout = StateLayout(state_dir)
    if not layout.certomancer_config.exists() or not layout.tsa_certificate.exists():
        raise ConfigError(detail=translate(NO_PKI, language, state_dir=state_dir))

    urls = PkiUrls.parse(load_config(state_dir).section("pki").get("base_url") or DEFAULT_PKI_BASE_URL)
    if urls.host != "127.0.0.1":
        raise ConfigError(detail=translate(NOT_LOOPBACK, language, base_url=urls.base_url))

    server = PkiServer(state_dir, "127.0.0.1", urls.port)

    print(translate(SERVING, language, state_dir=state_dir, base_url=urls.base_url))
    for ca_name in ("root", "intermediate"):
        print(f"  OCSP  {urls.ocsp_url(ca_name)}")
        print(f"  CRL   {urls.crl_url(ca_name)}")
    print(f"  TSA   {urls.tsa_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        _logger.info("serve-pki interrupted")
    finally:
        server.close()
    return 0
