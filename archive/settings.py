"""The ``[archive]`` section of ``qsign.toml``, parsed and validated.

Keys and defaults (relative paths are relative to the state dir)::

    [archive]
    database_url = "sqlite:///<state>/archive/archive.db"   # any SQLAlchemy URL
    sqlite_synchronous = "full"               # "full": a commit survives a power cut (one fsync per
                                              # commit); "normal": the last commits may be lost on a
                                              # power cut, the database stays consistent
    documents_dir = "archive/documents"       # content-addressed store of originals and signed files
    encryption = "off"                        # "off" | "keyfile" | "pkcs11"
    kek_file = "archive/kek.key"              # encryption = "keyfile": 32 random bytes, mode 0600
    kek_profile = "archive_kek"               # encryption = "pkcs11": a [tokens.NAME] profile whose
                                              # "key" is the label of an AES-256 secret key
    kek_create = false                        # create the missing key-encryption key on first use
    checkpoint_every = 100                    # sign a checkpoint every N audit entries; 0 = off
    checkpoint_interval_seconds = 3600        # and at the first entry after this long; 0 = off
    checkpoint_profile = ""                   # [tokens.NAME] profile of the signing key; "" = none
    checkpoint_key_file = ""                  # development only: PEM private key used instead of a
    checkpoint_certificate = ""               # token, with its PEM certificate
    retention_days = 0                        # global retention; 0 = keep forever
    template_retention_days = {}              # template id -> days, overrides retention_days
    legal_holds = []                          # document SHA-256 values or "request:<id>" never pruned

With no ``[archive]`` section every default applies: no encryption and no checkpoint signing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qsign.config import Config
from qsign.errors import ConfigError

__all__ = ["ArchiveSettings", "ENCRYPTION_MODES", "load_settings"]

ENCRYPTION_MODES = ("off", "keyfile", "pkcs11")

_KNOWN_KEYS = {
    "database_url", "sqlite_synchronous", "documents_dir", "encryption", "kek_file", "kek_profile",
    "kek_create", "checkpoint_every", "checkpoint_interval_seconds", "checkpoint_profile",
    "checkpoint_key_file", "checkpoint_certificate", "retention_days", "template_retention_days",
    "legal_holds",
}


@dataclass
class ArchiveSettings:
    """Validated ``[archive]`` settings with every path resolved against the state dir."""

    state_dir: Path
    database_url: str
    documents_dir: Path
    sqlite_synchronous: str = "full"
    encryption: str = "off"
    kek_file: Path | None = None
    kek_profile: str | None = None
    kek_create: bool = False
    checkpoint_every: int = 100
    checkpoint_interval_seconds: int = 3600
    checkpoint_profile: str | None = None
    checkpoint_key_file: Path | None = None
    checkpoint_certificate: Path | None = None
    retention_days: int = 0
    template_retention_days: dict[str, int] = field(default_factory=dict)
    legal_holds: list[str] = field(default_factory=list)

    @property
    def archive_dir(self) -> Path:
        """Directory of the default database and documents: ``<state>/archive``."""
        return self.state_dir / "archive"


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = table.get(key, default)
    if value is None:
        return default
    # TOML booleans are ints in Python; reject them where a number is expected.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(detail=f"archive.{key} has the wrong type ({type(value).__name__})")
    return value


def load_settings(config: Config) -> ArchiveSettings:
    """Parse ``config.raw["archive"]``; raise ``ConfigError`` naming the bad key."""
    table = config.section("archive")
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(detail=f"unknown key archive.{unknown[0]} (allowed: {', '.join(sorted(_KNOWN_KEYS))})")

    state_dir = config.state_dir
    default_url = f"sqlite:///{state_dir / 'archive' / 'archive.db'}"

    def optional_path(key: str) -> Path | None:
        value = _get(table, key, str, "")
        return config.resolve(value) if value else None

    settings = ArchiveSettings(
        state_dir=state_dir,
        database_url=_get(table, "database_url", str, default_url),
        sqlite_synchronous=_get(table, "sqlite_synchronous", str, "full"),
        documents_dir=config.resolve(_get(table, "documents_dir", str, "archive/documents")),
        encryption=_get(table, "encryption", str, "off"),
        kek_file=optional_path("kek_file") or state_dir / "archive" / "kek.key",
        kek_profile=_get(table, "kek_profile", str, "") or None,
        kek_create=_get(table, "kek_create", bool, False),
        checkpoint_every=_get(table, "checkpoint_every", int, 100),
        checkpoint_interval_seconds=_get(table, "checkpoint_interval_seconds", int, 3600),
        checkpoint_profile=_get(table, "checkpoint_profile", str, "") or None,
        checkpoint_key_file=optional_path("checkpoint_key_file"),
        checkpoint_certificate=optional_path("checkpoint_certificate"),
        retention_days=_get(table, "retention_days", int, 0),
        template_retention_days=dict(_get(table, "template_retention_days", dict, {})),
        legal_holds=list(_get(table, "legal_holds", list, [])),
    )

    if settings.sqlite_synchronous not in ("full", "normal"):
        raise ConfigError(detail=f"archive.sqlite_synchronous must be \"full\" or \"normal\", "
                                 f"not {settings.sqlite_synchronous!r}")
    if settings.encryption not in ENCRYPTION_MODES:
        raise ConfigError(detail=f"archive.encryption must be one of {', '.join(ENCRYPTION_MODES)}, "
                                 f"not {settings.encryption!r}")
    if settings.encryption == "pkcs11" and not settings.kek_profile:
        raise ConfigError(detail="archive.encryption = \"pkcs11\" needs archive.kek_profile")
    if settings.encryption == "pkcs11" and settings.kek_profile not in config.tokens:
        raise ConfigError(detail=f"archive.kek_profile names no [tokens.{settings.kek_profile}] section")
    if settings.checkpoint_profile and settings.checkpoint_profile not in config.tokens:
        raise ConfigError(detail=f"archive.checkpoint_profile names no [tokens.{settings.checkpoint_profile}] section")
    if bool(settings.checkpoint_key_file) != bool(settings.checkpoint_certificate):
        raise ConfigError(detail="archive.checkpoint_key_file and archive.checkpoint_certificate go together")
    if min(settings.checkpoint_every, settings.checkpoint_interval_seconds, settings.retention_days) < 0:
        raise ConfigError(detail="archive.checkpoint_every, archive.checkpoint_interval_seconds and "
                                 "archive.retention_days must be 0 or more")
    for template, days in settings.template_retention_days.items():
        if not isinstance(days, int) or isinstance(days, bool) or days < 0:
            raise ConfigError(detail=f"archive.template_retention_days.{template} must be a number of days")
    for hold in settings.legal_holds:
        if not isinstance(hold, str):
            raise ConfigError(detail="archive.legal_holds must list SHA-256 values or \"request:<id>\" strings")

    return settings
