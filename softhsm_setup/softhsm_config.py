"""The SoftHSM2 configuration file of a state dir, and the environment that selects it.

SoftHSM2 reads the file named by ``SOFTHSM2_CONF`` in ``C_Initialize`` (and ``softhsm2-util`` at
start). Each state dir has its own file and token directory, so ``qsign softhsm init`` never touches
``/etc/softhsm/softhsm2.conf`` or the tokens of other users.
"""

from __future__ import annotations

import logging
import os

from softhsm_setup.files import Status, ensure_directory, write_file
from softhsm_setup.layout import StateLayout

__all__ = ["render_softhsm_config", "write_softhsm_config", "softhsm_environment"]

_logger = logging.getLogger(__name__)


def render_softhsm_config(layout: StateLayout) -> str:
    """Return the SoftHSM2 config text for ``layout``.

    ``directories.tokendir`` must be absolute because SoftHSM2 resolves a relative one against the
    working directory of whichever process loads the module.
    """
    return (
        "# SoftHSM2 configuration written by \"qsign softhsm init\"; qsign rewrites it on the next init.\n"
        f"directories.tokendir = {layout.token_dir.resolve()}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )


def write_softhsm_config(layout: StateLayout) -> Status:
    """Write the SoftHSM2 config and create the token dir (mode 0700) when missing.

    The config belongs to qsign: a file with other content is rewritten (``UPDATED``). This happens
    when the state dir was moved, since the token dir path in the file is absolute.
    """
    ensure_directory(layout.softhsm_dir, 0o755)
    ensure_directory(layout.token_dir, 0o700)

    text = render_softhsm_config(layout)
    if layout.softhsm_conf.exists():
        if layout.softhsm_conf.read_text(encoding="utf-8") == text:
            return Status.EXISTS
        status = Status.UPDATED
    else:
        status = Status.CREATED

    write_file(layout.softhsm_conf, text.encode("utf-8"), 0o644)
    _logger.info("wrote SoftHSM2 config %s", layout.softhsm_conf)
    return status


def softhsm_environment(layout: StateLayout) -> dict[str, str]:
    """Return a copy of ``os.environ`` with ``SOFTHSM2_CONF`` set to the state dir's config."""
    environment = dict(os.environ)
    environment["SOFTHSM2_CONF"] = str(layout.softhsm_conf)
    return environment

