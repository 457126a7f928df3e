"""Signature levels B-B, B-T, B-LT and B-LTA, and what each needs from qsign.toml.

The agent's templates, the bulk profiles (``[profiles.NAME] level``) and ``qsign sign --level``
all map a level name to signing settings here:

- B-B: a signature and nothing else.
- B-T: plus a signature timestamp from the ``[tsa]`` TSA.
- B-LT: plus the certificates, OCSP responses and CRLs of the signer and the TSA in the PDF's
  document security store (DSS). They are fetched before signing, and the signer's certificate must
  be valid and not revoked at that moment, otherwise signing fails (``signer_revoked``,
  ``revocation_unavailable``, ``signer_not_trusted``).
- B-LTA: plus a document timestamp over all of that.

CAdES (detached ``.p7s``) supports B-B and B-T.

With ``[signing] check_revocation = true`` in qsign.toml, or ``check_revocation=True`` from a caller
such as the agent's policy, B-B and B-T signatures check the signer's certificate the same way
before signing. Nothing fetched is embedded. A revoked certificate or an unreachable responder then
fails the signature as it does at B-LT. Fetched responses are reused for ``[ltv] cache_seconds``, so
a revocation can take that long to be seen.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from dataclasses import dataclass
from typing import Any

from pyhanko_certvalidator import ValidationContext

from qsign.config import Config
from qsign.errors import ConfigError
from signing.ltv import LtvFetcher, LtvSettings, signing_validation_context, tsa_trust_context
from signing.ltv_errors import LevelNotSupported, LevelUnknown, TsaNotConfigured
from signing.pades import PadesOptions
from signing.tsa import QsignTimeStamper, TsaSettings

__all__ = ["Level", "LevelSettings", "level_settings", "pades_options_for_level", "cades_settings_for_level",
           "shared_fetcher", "revocation_check_configured"]


class Level(str, enum.Enum):
    """A PAdES/CAdES baseline level, spelled as ETSI EN 319 142-1 spells it."""

    B_B = "B-B"
    B_T = "B-T"
    B_LT = "B-LT"
    B_LTA = "B-LTA"

    @classmethod
    def parse(cls, name: str | Level) -> Level:
        """Return the level for ``B-LT``, ``b-lt`` or ``B_LT``; raise ``LevelUnknown`` otherwise."""
        if isinstance(name, Level):
            return name
        normalized = str(name).strip().upper().replace("_", "-")
        for level in cls:
            if level.value == normalized:
                return level
        raise LevelUnknown(level=str(name))

    @property
    def timestamped(self) -> bool:
        return self is not Level.B_B

    @property
    def long_term(self) -> bool:
        return self in (Level.B_LT, Level.B_LTA)


@dataclass(frozen=True)
class LevelSettings:
    """The pyHanko inputs that give a signature its level."""

    level: Level
    timestamper: QsignTimeStamper | None = None
    #: Set for B-LT and B-LTA, and for B-B and B-T when the revocation check before signing is on.
    validation_context: ValidationContext | None = None
    embed_validation_info: bool = False
    use_pades_lta: bool = False


_fetchers: dict[str, LtvFetcher] = {}
_fetchers_lock = threading.Lock()


def shared_fetcher(config: Config) -> LtvFetcher:
    """Return the process's ``LtvFetcher`` for ``config``, so its cache serves every signature."""
    settings = LtvSettings.from_config(config)
    key = f"{config.path}:{settings.fetch_timeout}:{settings.cache_seconds}"
    with _fetchers_lock:
        if key not in _fetchers:
            _fetchers[key] = LtvFetcher(settings)
        return _fetchers[key]


def revocation_check_configured(config: Config) -> bool:
    """Return ``[signing] check_revocation`` of qsign.toml (default false).

    Raises ``ConfigError`` when the value is not a boolean or ``[signing]`` has another key, so that a
    misspelt key does not leave the check silently off.
    """
    table = config.section("signing")
    unknown = sorted(set(table) - {"check_revocation"})
    if unknown:
        raise ConfigError(detail=f"unknown key signing.{unknown[0]} (allowed: check_revocation)")
    value = table.get("check_revocation", False)
    if not isinstance(value, bool):
        raise ConfigError(detail=f"signing.check_revocation must be true or false, not {value!r}")
    return value


def level_settings(level: Level | str, config: Config, *, tsa_table: dict[str, Any] | None = None,
                   fetcher: LtvFetcher | None = None, check_revocation: bool = False) -> LevelSettings:
    """Return what signing at ``level`` needs, built from ``config``.

    ``tsa_table`` replaces ``[tsa]`` (a template or profile with its own TSA). ``check_revocation``
    (or ``[signing] check_revocation``) adds the revocation check before signing to B-B and B-T.
    Raises ``LevelUnknown``, ``TsaNotConfigured`` and ``ConfigError``.
    """
    level = Level.parse(level)
    check_revocation = check_revocation or revocation_check_configured(config)
    context = None
    if check_revocation and not level.long_term:
        context = signing_validation_context(config, fetcher or shared_fetcher(config))
    if not level.timestamped:
        return LevelSettings(level=level, validation_context=context)

    tsa = TsaSettings.from_config(config, tsa_table)
    if tsa is None:
        raise TsaNotConfigured(level=level.value)
    timestamper = QsignTimeStamper(tsa, tsa_trust_context(config))
    if not level.long_term:
        return LevelSettings(level=level, timestamper=timestamper, validation_context=context)

    context = signing_validation_context(config, fetcher or shared_fetcher(config))
    return LevelSettings(level=level, timestamper=timestamper, validation_context=context,
                         embed_validation_info=True, use_pades_lta=level is Level.B_LTA)


def pades_options_for_level(level: Level | str, config: Config, base: PadesOptions = PadesOptions(), *,
                            tsa_table: dict[str, Any] | None = None, fetcher: LtvFetcher | None = None,
                            check_revocation: bool = False) -> PadesOptions:
    """Return ``base`` with the timestamper and validation settings of ``level``."""
    settings = level_settings(level, config, tsa_table=tsa_table, fetcher=fetcher,
                              check_revocation=check_revocation)
    return dataclasses.replace(base, timestamper=settings.timestamper, validation_context=settings.validation_context,
                               embed_validation_info=settings.embed_validation_info,
                               use_pades_lta=settings.use_pades_lta)


def cades_settings_for_level(level: Level | str, config: Config, *, tsa_table: dict[str, Any] | None = None,
                             check_revocation: bool = False) -> LevelSettings:
    """Return the timestamper (``None`` for B-B) and the validation context of the revocation check
    (``None`` when off) for a CAdES signature at ``level``.

    Raises ``LevelNotSupported`` for B-LT and B-LTA.
    """
    level = Level.parse(level)
    if level.long_term:
        raise LevelNotSupported(level=level.value, format="CAdES")
    return level_settings(level, config, tsa_table=tsa_table, check_revocation=check_revocation)

