"""ATR → card name and PKCS#11 module.

A card's name comes first from qsign's own table (``token_drivers/cards.toml``, extended or
overridden by ``[cards.NAME]`` tables in ``qsign.toml``), then from the list that pcsc-tools keeps
(``/usr/share/pcsc/smartcard_list.txt``, Debian package ``pcsc-tools``). Only qsign's table names a
PKCS#11 module, because the pcsc-tools list describes cards, not middleware.

Both tables write an ATR pattern as a regular expression over the ATR in upper-case hex bytes
separated by single spaces (``3B 7A .. 00``), which is the syntax of ``smartcard_list.txt``.
"""

from __future__ import annotations

import functools
import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qsign.errors import ConfigError
from token_drivers.module import OPENSC_MODULE_CANDIDATES, find_installed_module

__all__ = ["CardType", "CardIdentity", "CardCatalog", "format_atr", "load_catalog", "SMARTCARD_LIST"]

_logger = logging.getLogger(__name__)

SMARTCARD_LIST = Path("/usr/share/pcsc/smartcard_list.txt")
_BUILTIN_TABLE = Path(__file__).with_name("cards.toml")
#: Module aliases a table may use in place of a path.
_MODULE_ALIASES = {"opensc": OPENSC_MODULE_CANDIDATES}


def format_atr(atr: bytes) -> str:
    """Return ``atr`` as upper-case hex bytes separated by spaces, the form ATR patterns match."""
    return " ".join(f"{byte:02X}" for byte in atr)


@dataclass(frozen=True)
class CardType:
    """A row of qsign's card table: which ATRs it covers and which PKCS#11 module drives the card."""

    key: str
    name: str
    atr_pattern: re.Pattern[str]
    #: Path of the PKCS#11 module, or ``None`` when the alias names a module not installed here.
    module: str | None


@dataclass(frozen=True)
class CardIdentity:
    """What qsign knows about a card from its ATR."""

    atr: bytes
    #: Card name from qsign's table, else the first description line of ``smartcard_list.txt``.
    name: str | None
    #: PKCS#11 module that drives the card, from qsign's table; ``None`` for a card qsign cannot use.
    module: str | None
    #: Key of the qsign table row that matched, ``None`` when no row did.
    card_type: str | None

    @property
    def known(self) -> bool:
        """Whether qsign's table maps this ATR to a module, so qsign can sign with the card."""
        return self.module is not None

    def to_dict(self) -> dict[str, Any]:
        return {"atr": format_atr(self.atr), "name": self.name, "module": self.module,
                "card_type": self.card_type}


def _resolve_module(value: str, where: str) -> str | None:
    candidates = _MODULE_ALIASES.get(value)
    if candidates is not None:
        return find_installed_module(candidates)
    if not value.startswith("/"):
        raise ConfigError(detail=f"{where}.module must be an absolute path or one of {sorted(_MODULE_ALIASES)}")
    return value


def _parse_table(table: Mapping[str, Any], source: str) -> list[CardType]:
    rows = []
    for key, row in table.items():
        where = f"cards.{key}"
        if not isinstance(row, dict) or not isinstance(row.get("atr"), str):
            raise ConfigError(detail=f"{where} in {source} must be a table with a string key 'atr'")
        unknown = set(row) - {"name", "atr", "module"}
        if unknown:
            raise ConfigError(detail=f"unknown keys {sorted(unknown)} in {where} of {source}")
        try:
            pattern = re.compile(row["atr"], re.IGNORECASE)
        except re.error as error:
            raise ConfigError(detail=f"{where}.atr in {source} is not a valid pattern: {error}") from error
        module = _resolve_module(row["module"], where) if isinstance(row.get("module"), str) else None
        rows.append(CardType(key=key, name=str(row.get("name", key)), atr_pattern=pattern, module=module))
    return rows


@functools.lru_cache(maxsize=4)
def _read_smartcard_list(path: Path) -> tuple[tuple[re.Pattern[str], str], ...]:
    """Parse ``smartcard_list.txt``: an ATR pattern line, then description lines starting with a tab."""
    entries: list[tuple[re.Pattern[str], str]] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        _logger.warning("%s not found (Debian package pcsc-tools); cards are named from qsign's table only", path)
        return ()

    pending: re.Pattern[str] | None = None
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if line.startswith("\t"):
            if pending is not None:
                entries.append((pending, line.strip()))
                pending = None
            continue
        try:
            pending = re.compile(line.strip(), re.IGNORECASE)
        except re.error:
            _logger.debug("skipping an invalid ATR pattern in %s: %r", path, line)
            pending = None
    return tuple(entries)


class CardCatalog:
    """Identifies cards by ATR from qsign's table (user rows first) and ``smartcard_list.txt``."""

    def __init__(self, card_types: list[CardType], smartcard_list: Path | None = SMARTCARD_LIST) -> None:
        self.card_types = card_types
        self.smartcard_list = smartcard_list

    def identify(self, atr: bytes) -> CardIdentity:
        """Return the name and module of the card with this ATR; unknown parts are ``None``."""
        text = format_atr(atr)
        for card_type in self.card_types:
            if card_type.atr_pattern.fullmatch(text):
                return CardIdentity(atr=atr, name=card_type.name, module=card_type.module, card_type=card_type.key)

        name = None
        if self.smartcard_list is not None:
            for pattern, description in _read_smartcard_list(self.smartcard_list):
                if pattern.fullmatch(text):
                    name = description
                    break
        return CardIdentity(atr=atr, name=name, module=None, card_type=None)


def load_catalog(config_raw: Mapping[str, Any] | None = None, smartcard_list: Path | None = SMARTCARD_LIST) -> CardCatalog:
    """Build the catalog from the shipped table and the ``[cards]`` tables of a parsed ``qsign.toml``.

    A user row with the key of a shipped row replaces it; other user rows are tried before the
    shipped ones. Raises ``ConfigError`` naming the bad key.
    """
    builtin = _parse_table(tomllib.loads(_BUILTIN_TABLE.read_text(encoding="utf-8")), str(_BUILTIN_TABLE))
    user_table = (config_raw or {}).get("cards") or {}
    if not isinstance(user_table, dict):
        raise ConfigError(detail="[cards] in qsign.toml must be a table of tables")
    user = _parse_table(user_table, "qsign.toml")
    user_keys = {row.key for row in user}
    return CardCatalog(user + [row for row in builtin if row.key not in user_keys], smartcard_list)
