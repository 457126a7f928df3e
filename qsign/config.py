"""The state directory and its ``qsign.toml``.

Every command takes ``--state-dir``; without it the state dir is ``$QSIGN_STATE_DIR``, else
``~/.local/share/qsign``. ``qsign softhsm init`` writes ``qsign.toml`` there, and every other command
finds the PKCS#11 modules, tokens and trust anchors through it. Each package parses and validates
the sections it owns (``[archive]``, ``[agent]``, ``[profiles.NAME]`` …) from ``Config.raw``; this
module parses the shared ones: ``[general]``, ``[pkcs11]``, ``[trust]`` and ``[tokens.NAME]``.
Relative paths in the file are relative to the state dir.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from qsign.errors import ConfigError

__all__ = [
    "CONFIG_NAME",
    "Config",
    "TokenProfile",
    "apply_environment",
    "default_state_dir",
    "load_config",
    "resolve_state_dir",
    "write_config",
]

CONFIG_NAME = "qsign.toml"


def default_state_dir() -> Path:
    """Return ``$QSIGN_STATE_DIR`` or ``~/.local/share/qsign``."""
    from_env = os.environ.get("QSIGN_STATE_DIR")
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".local" / "share" / "qsign"


def resolve_state_dir(argument: str | os.PathLike[str] | None) -> Path:
    """Return the absolute state dir for a ``--state-dir`` value (``None`` when not given)."""
    path = Path(argument).expanduser() if argument else default_state_dir()
    return path.resolve()


@dataclass(frozen=True)
class TokenProfile:
    """Where a signing key lives: module, token and key, and where its PIN comes from."""

    name: str
    module: str
    token_label: str
    key_label: str
    #: Name of an environment variable that contains the PIN.
    pin_env: str | None = None
    #: File whose first line is the PIN (test set-ups only; keep it mode 0600).
    pin_file: Path | None = None


@dataclass
class Config:
    """The parsed ``qsign.toml`` of one state dir."""

    state_dir: Path
    path: Path
    language: str | None = None
    #: PKCS#11 module used when a command is given no ``--module``.
    default_module: str | None = None
    #: ``SOFTHSM2_CONF`` to set before SoftHSM2 is loaded.
    softhsm_conf: Path | None = None
    trust_anchors: list[Path] = field(default_factory=list)
    intermediates: list[Path] = field(default_factory=list)
    tokens: dict[str, TokenProfile] = field(default_factory=dict)
    #: The whole file, for the sections other packages own.
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def resolve(self, value: str | os.PathLike[str]) -> Path:
        """Resolve a path from the file against the state dir."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.state_dir / path

    def section(self, *names: str) -> dict[str, Any]:
        """Return a nested table such as ``section("profiles", "seal")``, or ``{}`` when absent."""
        table: Any = self.raw
        for name in names:
            table = table.get(name, {}) if isinstance(table, dict) else {}
        return table if isinstance(table, dict) else {}


def _expect(table: dict[str, Any], key: str, kind: type, where: str, required: bool = False) -> Any:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigError(detail=f"missing key {where}.{key}")
        return None
    if not isinstance(value, kind):
        raise ConfigError(detail=f"{where}.{key} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def _reject_unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(detail=f"unknown key {where}.{unknown[0]} (allowed: {', '.join(sorted(allowed))})")


def load_config(state_dir: Path, config_path: Path | None = None) -> Config:
    """Load and validate ``qsign.toml``; a missing file gives an empty config for that state dir."""
    path = config_path or state_dir / CONFIG_NAME
    config = Config(state_dir=state_dir, path=path)
    if not path.exists():
        return config

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(detail=f"{path}: {exc}") from exc
    config.raw = raw

    general = raw.get("general", {})
    _reject_unknown(general, {"language", "log_format"}, "general")
    config.language = _expect(general, "language", str, "general")

    pkcs11 = raw.get("pkcs11", {})
    _reject_unknown(pkcs11, {"module", "softhsm_conf", "modules"}, "pkcs11")
    config.default_module = _expect(pkcs11, "module", str, "pkcs11")
    softhsm_conf = _expect(pkcs11, "softhsm_conf", str, "pkcs11")
    config.softhsm_conf = config.resolve(softhsm_conf) if softhsm_conf else None

    trust = raw.get("trust", {})
    _reject_unknown(trust, {"anchors", "intermediates"}, "trust")
    config.trust_anchors = [config.resolve(p) for p in _expect(trust, "anchors", list, "trust") or []]
    config.intermediates = [config.resolve(p) for p in _expect(trust, "intermediates", list, "trust") or []]

    for name, table in (raw.get("tokens") or {}).items():
        where = f"tokens.{name}"
        if not isinstance(table, dict):
            raise ConfigError(detail=f"{where} must be a table")
        _reject_unknown(table, {"module", "token", "key", "pin_env", "pin_file"}, where)
        pin_file = _expect(table, "pin_file", str, where)
        config.tokens[name] = TokenProfile(
            name=name,
            module=_expect(table, "module", str, where) or config.default_module or "",
            token_label=_expect(table, "token", str, where, required=True),
            key_label=_expect(table, "key", str, where, required=True),
            pin_env=_expect(table, "pin_env", str, where),
            pin_file=config.resolve(pin_file) if pin_file else None,
        )
        if not config.tokens[name].module:
            raise ConfigError(detail=f"missing key {where}.module and no pkcs11.module default")

    return config


def write_config(path: Path, raw: dict[str, Any]) -> None:
    """Write ``raw`` as TOML atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        tomli_w.dump(raw, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def apply_environment(config: Config) -> None:
    """Set ``SOFTHSM2_CONF`` to the state dir's SoftHSM2 config, when the config names one.

    The state dir decides which tokens a command sees, so this overrides a ``SOFTHSM2_CONF`` already in
    the environment. SoftHSM2 reads the variable once, in ``C_Initialize``, so this must run before the
    module is loaded.
    """
    if config.softhsm_conf is not None:
        os.environ["SOFTHSM2_CONF"] = str(config.softhsm_conf)
