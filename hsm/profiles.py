"""Bulk sealing profiles: the ``[profiles.NAME]`` tables of ``qsign.toml``.

A profile names the key, through a ``[tokens.NAME]`` entry or inline, and how documents are sealed::

    [profiles.seal]
    token = "seal"                 # a [tokens.NAME] entry; or the inline keys below
    # module = "/usr/lib/softhsm/libsofthsm2.so"
    # token_label = "qsign-hsm"    # or token_serial = "..."
    # key_label = "seal-rsa"       # or key_id = "hex"
    # pin_env = "QSIGN_HSM_PIN"    # or pin_file = "secrets/hsm.pin"; a PIN is never written inline
    workers = 2                    # worker processes, each with its own PKCS#11 session
    format = "pades"               # PAdES signatures on PDF files
    level = "B-B"                  # PAdES baseline level: B-B; B-T with a signature timestamp from [tsa];
                                   # B-LT adds the validation data (DSS); B-LTA adds a document timestamp
    digest = "sha256"              # default: sha384 for P-384 keys, else sha256
    pss = false                    # RSASSA-PSS instead of PKCS#1 v1.5 for RSA keys
    appearance = "invisible"       # or a table: { page = 1, rect = [x1, y1, x2, y2], seal_image = "..." }
    output_name = "{stem}{suffix}" # file name of the output; {stem}, {suffix} and {name} of the input
    field_name = ""                # signature field; "" picks the first free SignatureN
    reason = ""
    location = ""
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qsign.config import Config, TokenProfile
from hsm.errors import ProfileInvalid, ProfileNotFound

__all__ = ["BulkProfile", "Appearance", "load_profiles", "get_profile", "DEFAULT_WORKERS", "MAX_WORKERS"]

#: Worker processes when a profile names none: one per CPU, at least one.
DEFAULT_WORKERS = max(1, os.cpu_count() or 1)
#: Upper bound on ``workers``: more sessions than this gain nothing on one machine and exhaust tokens.
MAX_WORKERS = 64

_FORMATS = ("pades",)
#: B-LT and B-LTA add validation data (and a document timestamp) in further incremental updates
#: after the B-T signature (hsm.longterm).
_LEVELS = ("B-B", "B-T", "B-LT", "B-LTA")
_DIGESTS = ("sha256", "sha384", "sha512")
_KEYS = {"token", "module", "token_label", "token_serial", "key_label", "key_id", "pin_env", "pin_file",
         "workers", "format", "level", "digest", "pss", "appearance", "output_name", "field_name", "reason",
         "location"}


@dataclass(frozen=True)
class Appearance:
    """A visible seal: page (1-based, -1 = last), rectangle in PDF points, and an optional image."""

    page: int
    rect: tuple[float, float, float, float]
    seal_image: Path | None = None


@dataclass(frozen=True)
class BulkProfile:
    """A validated ``[profiles.NAME]`` table."""

    name: str
    module: str
    token_label: str | None
    token_serial: str | None
    key_label: str | None
    key_id: bytes | None
    pin_env: str | None
    pin_file: Path | None
    workers: int = DEFAULT_WORKERS
    format: str = "pades"
    level: str = "B-B"
    digest: str | None = None
    pss: bool = False
    appearance: Appearance | None = None
    output_name: str = "{stem}{suffix}"
    field_name: str | None = None
    reason: str | None = None
    location: str | None = None
    #: The ``[tokens.NAME]`` entry the key comes from, when the profile names one.
    token_profile: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def output_file_name(self, input_name: str) -> str:
        """Return the output file name for an input file name, by ``output_name``."""
        path = Path(input_name)
        return self.output_name.format(stem=path.stem, suffix=path.suffix, name=path.name)

    def describe_key(self) -> str:
        """Return ``token/key`` for messages and the audit log."""
        token = self.token_label or f"serial:{self.token_serial}"
        key = self.key_label or (f"id:{self.key_id.hex()}" if self.key_id else "?")
        return f"{token}/{key}"


def _check(table: dict[str, Any], key: str, kind: type | tuple[type, ...], name: str) -> Any:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProfileInvalid(profile=name, detail=f"{key} has the wrong type ({type(value).__name__})",
                             ids={"profile": name})
    return value


def _parse_appearance(value: Any, name: str, config: Config) -> Appearance | None:
    if value is None or value == "invisible":
        return None
    if not isinstance(value, dict):
        raise ProfileInvalid(profile=name, detail='appearance must be "invisible" or a table',
                             ids={"profile": name})
    page = value.get("page", 1)
    rect = value.get("rect")
    if not isinstance(page, int) or isinstance(page, bool):
        raise ProfileInvalid(profile=name, detail="appearance.page must be an integer", ids={"profile": name})
    if (not isinstance(rect, list) or len(rect) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rect)):
        raise ProfileInvalid(profile=name, detail="appearance.rect must be [x1, y1, x2, y2] in points",
                             ids={"profile": name})
    image = value.get("seal_image")
    return Appearance(page=page, rect=tuple(float(v) for v in rect),  # type: ignore[arg-type]
                      seal_image=config.resolve(image) if isinstance(image, str) else None)


def _parse_profile(config: Config, name: str, table: dict[str, Any]) -> BulkProfile:
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ProfileInvalid(profile=name, detail=f"unknown key {unknown[0]}", ids={"profile": name})

    token_name = _check(table, "token", str, name)
    base: TokenProfile | None = None
    if token_name is not None:
        base = config.tokens.get(token_name)
        if base is None:
            raise ProfileInvalid(profile=name, detail=f"token = {token_name!r} names no [tokens.{token_name}]",
                                 ids={"profile": name})

    pin_file = _check(table, "pin_file", str, name)
    key_id = _check(table, "key_id", str, name)
    try:
        key_id_bytes = bytes.fromhex(key_id) if key_id else None
    except ValueError:
        raise ProfileInvalid(profile=name, detail="key_id must be hexadecimal", ids={"profile": name}) from None

    workers = _check(table, "workers", int, name) or DEFAULT_WORKERS
    if not 1 <= workers <= MAX_WORKERS:
        raise ProfileInvalid(profile=name, detail=f"workers must be between 1 and {MAX_WORKERS}",
                             ids={"profile": name})
    for key, allowed in (("format", _FORMATS), ("level", _LEVELS), ("digest", _DIGESTS)):
        value = _check(table, key, str, name)
        if value is not None and value not in allowed:
            raise ProfileInvalid(profile=name, detail=f"{key} = {value!r} is not supported (supported: "
                                 f"{', '.join(allowed)})", ids={"profile": name})

    output_name = _check(table, "output_name", str, name) or "{stem}{suffix}"
    try:
        sample = output_name.format(stem="a", suffix=".pdf", name="a.pdf")
    except (KeyError, IndexError, ValueError) as error:
        raise ProfileInvalid(profile=name, detail=f"output_name: unknown placeholder {error}",
                             ids={"profile": name}) from None
    if "/" in sample or "\\" in sample or sample in ("", ".", ".."):
        raise ProfileInvalid(profile=name, detail="output_name must give a plain file name",
                             ids={"profile": name})

    profile = BulkProfile(
        name=name,
        module=_check(table, "module", str, name) or (base.module if base else None) or config.default_module or "",
        token_label=_check(table, "token_label", str, name) or (base.token_label if base else None),
        token_serial=_check(table, "token_serial", str, name),
        key_label=_check(table, "key_label", str, name) or (base.key_label if base else None),
        key_id=key_id_bytes,
        pin_env=_check(table, "pin_env", str, name) or (base.pin_env if base else None),
        pin_file=config.resolve(pin_file) if pin_file else (base.pin_file if base else None),
        workers=workers,
        format=_check(table, "format", str, name) or "pades",
        level=_check(table, "level", str, name) or "B-B",
        digest=_check(table, "digest", str, name),
        pss=bool(_check(table, "pss", bool, name)),
        appearance=_parse_appearance(table.get("appearance"), name, config),
        output_name=output_name,
        field_name=_check(table, "field_name", str, name) or None,
        reason=_check(table, "reason", str, name) or None,
        location=_check(table, "location", str, name) or None,
        token_profile=token_name,
    )
    if not profile.module:
        raise ProfileInvalid(profile=name, detail="no module and no [pkcs11] module default", ids={"profile": name})
    if not (profile.token_label or profile.token_serial):
        raise ProfileInvalid(profile=name, detail="token_label or token_serial is required", ids={"profile": name})
    if not (profile.key_label or profile.key_id):
        raise ProfileInvalid(profile=name, detail="key_label or key_id is required", ids={"profile": name})
    if not (profile.pin_env or profile.pin_file):
        raise ProfileInvalid(profile=name, detail="pin_env or pin_file is required", ids={"profile": name})
    return profile


def load_profiles(config: Config) -> dict[str, BulkProfile]:
    """Parse every ``[profiles.NAME]`` table; raise ``ProfileInvalid`` naming the first bad key."""
    profiles: dict[str, BulkProfile] = {}
    for name, table in (config.raw.get("profiles") or {}).items():
        if not isinstance(table, dict):
            raise ProfileInvalid(profile=name, detail="must be a table", ids={"profile": name})
        profiles[name] = _parse_profile(config, name, table)
    return profiles


def get_profile(config: Config, name: str) -> BulkProfile:
    """Return the profile ``name``; raise ``ProfileNotFound`` or ``ProfileInvalid``."""
    table = config.section("profiles", name)
    if not table:
        raise ProfileNotFound(profile=name, path=str(config.path), ids={"profile": name})
    return _parse_profile(config, name, table)
