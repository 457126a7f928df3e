"""The worker process of a bulk job: one ``Sealer`` (one PKCS#11 session) fed chunks over a queue.

Workers are started with the ``spawn`` method, so each loads the PKCS#11 module itself and makes
every token call from its main thread. A worker dies with its parent (``PR_SET_PDEATHSIG``), and it
holds a shared lock on the job's ``workers.lock`` while it lives, so a resumed job can wait until no
worker of an earlier run is left.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["worker_main", "certificate_summary"]

_logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl took effect.
    if os.getppid() != parent_pid:
        os._exit(1)


def certificate_summary(certificate: Any) -> dict[str, str]:
    """Return the ids of a signing certificate that audit entries carry."""
    return {"serial": format(certificate.serial_number, "x"), "subject": certificate.subject.human_friendly,
            "sha256": certificate.sha256.hex()}


def _open_store(config: Any) -> Any:
    """Open the archive's document store without its database: the scheduler writes every record.

    ``archive.api`` (and with it SQLAlchemy, about 13 MB of a worker's memory) is loaded only for
    an encrypted archive, to open its key-encryption key.
    """
    from archive.settings import load_settings
    from archive.store import DocumentStore

    settings = load_settings(config)
    kek = None
    if settings.encryption != "off":
        from archive.api import open_kek

        kek = open_kek(settings, config)
    return DocumentStore(settings.documents_dir, kek)


def _messages(error: Any) -> dict[str, str]:
    """Return a QsignError's message in every supported language, for the parent to pick from."""
    from qsign.i18n import SUPPORTED_LANGUAGES

    return {language: error.message(language) for language in SUPPORTED_LANGUAGES}


def worker_main(state_dir: str, profile_name: str, lock_path: str, tasks: Any, events: Any, parent_pid: int,
                index: int, log_level: int) -> None:
    """Run in a spawned process: open the key, then seal each chunk from ``tasks`` until ``None``."""
    _die_with_parent(parent_pid)
    logging.basicConfig(level=log_level, format=f"%(asctime)s worker-{index} %(levelname)s %(name)s: %(message)s")
    lock = open(lock_path, "a")  # noqa: SIM115 (held until the process exits)
    fcntl.flock(lock, fcntl.LOCK_SH)

    from hsm.profiles import get_profile
    from hsm.sealer import ItemTask, Sealer
    from qsign.config import apply_environment, load_config
    from qsign.errors import QsignError

    config = load_config(Path(state_dir))
    apply_environment(config)
    try:
        profile = get_profile(config, profile_name)
        store = _open_store(config)
        sealer = Sealer(config, profile, store)
    except QsignError as error:
        events.put(("fatal", index, error.code, _messages(error)))
        return
    events.put(("ready", index, certificate_summary(sealer.key.certificate)))

    try:
        while True:
            chunk = tasks.get()
            if chunk is None:
                break
            outcomes: list[Any] = []
            sealer.seal_chunk([ItemTask(**task) for task in chunk], outcomes.append)
            events.put(("outcomes", index, outcomes))
            if sealer.key is None and sealer.session_error is not None:
                # The session was lost and could not be opened again: the documents in flight were
                # retried once and failed. Stop, so that the rest of the job waits for a resume.
                error = sealer.session_error
                _logger.error("worker %d: token session lost and not reopened (%s); stopping", index, error.code)
                events.put(("token_lost", index, error.code, _messages(error)))
                break
    finally:
        sealer.close()
        if store.kek is not None:
            store.kek.close()
