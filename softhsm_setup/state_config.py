"""The ``qsign.toml`` that ``qsign softhsm init`` writes for its tokens and test PKI."""

from __future__ import annotations

import logging
import tomllib
from typing import Any

from qsign.config import load_config, write_config
from qsign.errors import ConfigError
from softhsm_setup.files import Status
from softhsm_setup.layout import StateLayout
from softhsm_setup.ltv_pki import DEFAULT_PKI_BASE_URL, PkiUrls
from softhsm_setup.specs import KEYS, TOKENS

__all__ = ["build_state_config", "write_state_config"]

_logger = logging.getLogger(__name__)


def build_state_config(layout: StateLayout, module_path: str, urls: PkiUrls | None = None) -> dict[str, Any]:
    """Return the ``qsign.toml`` tables for the tokens, keys and PKI that init makes."""
    urls = urls or PkiUrls(DEFAULT_PKI_BASE_URL)
    pin_files = {token.label: token.pin_file for token in TOKENS}
    tokens = {
        key.profile: {"token": key.token_label, "key": key.label, "pin_file": pin_files[key.token_label]}
        for key in KEYS
    }
    return {
        "general": {"language": "zh_CN"},
        "pkcs11": {"module": module_path, "softhsm_conf": layout.relative(layout.softhsm_conf)},
        "trust": {
            "anchors": [layout.relative(layout.root_certificate)],
            "intermediates": [layout.relative(layout.intermediate_certificate)],
        },
        "tokens": tokens,
        # Bulk sealing profiles (read by hsm.profiles) over the two HSM seal keys.
        "profiles": {
            "seal": {"token": "seal", "format": "pades", "level": "B-B"},
            "seal_ec": {"token": "seal_ec", "format": "pades", "level": "B-B"},
        },
        # Test PKI services (qsign softhsm serve-pki) and the TSA and revocation fetching that
        # PAdES B-T, B-LT and B-LTA use (read by signing.levels).
        "pki": {"base_url": urls.base_url},
        "tsa": {"url": urls.tsa_url, "hash_algorithm": "sha256", "timeout": 10.0, "retries": 2,
                "backoff": 0.5},
        "ltv": {"fetch_timeout": 10.0, "cache_seconds": 300},
    }


def _add_missing(existing: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Return ``existing`` with the keys of ``defaults`` it lacks; its own values always win."""
    merged = dict(existing)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = _add_missing(merged[key], value)
    return merged


def write_state_config(layout: StateLayout, module_path: str, urls: PkiUrls | None = None) -> Status:
    """Write ``qsign.toml``, or add to an existing one the tables and keys it lacks.

    Values already in the file are kept, so a later edit (another module path, more profiles,
    sections of other packages) survives a second init. The file is rewritten only when a key
    was missing. Raises ``ConfigError`` when the existing file is not valid TOML.
    """
    defaults = build_state_config(layout, module_path, urls)
    path = layout.config_path

    if path.exists():
        try:
            existing = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(detail=f"{path}: {error}", ids={"file": str(path)}) from error
        merged = _add_missing(existing, defaults)
        if merged == existing:
            return Status.EXISTS
        status = Status.UPDATED
    else:
        merged = defaults
        status = Status.CREATED

    write_config(path, merged)
    load_config(layout.state_dir)  # raises ConfigError naming the key if the result does not validate
    _logger.info("wrote %s (%s)", path, status.value)
    return status
