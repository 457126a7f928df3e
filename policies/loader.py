"""Loading the policy TOML file into ``policies.model`` records, with errors that name the bad key.

File layout (every table but ``[users]`` and ``[templates]`` is optional)::

    version = 1
    [users.<id>]           name, roles = ["officer" | "reviewer" | "operator" | "auditor" | "admin"],
                           token_profile, sign_from, sign_until (TOML date-times)
    [templates.<id>]       name_zh, name_en, requester_roles, signer_roles, reviewer_roles,
                           required_approvals, reviewer_not_signer, document_types, max_bytes, max_pages,
                           signature_format ("pades" | "cades"),
                           signature_level ("B-B" | "B-T" | "B-LT" | "B-LTA"; cades: "B-B" | "B-T"),
                           reason, location, valid_from, valid_until
    [templates.<id>.seal]  page, rect = [x1, y1, x2, y2], image, text
    [templates.<id>.tsa]   the template's own TSA, with the keys of qsign.toml's [tsa] (url required)
    [certificates]         key_usage = ["non_repudiation", ...], require_chain, required_policy_oids,
                           check_revocation (also before B-B and B-T signatures)
    [algorithms]           rsa_min_bits, ec_curves, digests
"""

from __future__ import annotations

import tomllib
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

from policies.errors import PolicyInvalid
from policies.model import AlgorithmPolicy, CertificatePolicy, Policy, Role, SealAppearance, Template, User

__all__ = ["load_policy", "parse_policy", "KEY_USAGE_NAMES"]

#: Key usage names in the policy file (RFC 5280 spelling) and the attribute cryptography uses.
KEY_USAGE_NAMES = {
    "digital_signature": "digital_signature",
    "non_repudiation": "content_commitment",
    "key_encipherment": "key_encipherment",
    "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement",
}
_SIGNATURE_LEVELS = {"B-B", "B-T", "B-LT", "B-LTA"}
#: CAdES detached signatures have no document security store, so no B-LT or B-LTA.
_CADES_LEVELS = {"B-B", "B-T"}
_FORMATS = {"pades", "cades"}
_DIGESTS = {"sha256", "sha384", "sha512"}
_CURVES = {"secp256r1", "secp384r1", "secp521r1"}

_USER_KEYS = {"name", "roles", "token_profile", "sign_from", "sign_until"}
_TEMPLATE_KEYS = {"name_zh", "name_en", "requester_roles", "signer_roles", "reviewer_roles", "required_approvals",
                  "reviewer_not_signer", "document_types", "max_bytes", "max_pages", "signature_format",
                  "signature_level", "reason", "location", "valid_from", "valid_until", "seal", "tsa"}
_SEAL_KEYS = {"page", "rect", "image", "text"}


class _Reader:
    """Typed access to one TOML table; every error names the full key."""

    def __init__(self, source: str, table: Any, where: str, allowed: set[str]) -> None:
        self.source = source
        self.where = where
        if not isinstance(table, dict):
            self.fail("", "must be a table")
        self.table = table
        unknown = sorted(set(table) - allowed)
        if unknown:
            self.fail(unknown[0], f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def key(self, name: str) -> str:
        if not self.where or not name:
            return self.where or name
        return f"{self.where}.{name}"

    def fail(self, name: str, detail: str) -> None:
        raise PolicyInvalid(path=self.source, key=self.key(name) or "(top level)", detail=detail,
                            ids={"key": self.key(name)})

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        if name not in self.table:
            if required:
                self.fail(name, "missing")
            return default
        value = self.table[name]
        if isinstance(value, bool) and kind in (int, float):
            self.fail(name, f"must be a number, not {value!r}")
        if not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.fail(name, f"must be a {expected}, not {type(value).__name__}")
        return value

    def strings(self, name: str, default: tuple[str, ...] = (), choices: set[str] | None = None) -> tuple[str, ...]:
        values = self.get(name, list, list(default))
        for value in values:
            if not isinstance(value, str):
                self.fail(name, f"must be a list of strings, found {value!r}")
            if choices is not None and value not in choices:
                self.fail(name, f"{value!r} is not one of {', '.join(sorted(choices))}")
        return tuple(values)

    def roles(self, name: str, default: tuple[str, ...] = ()) -> frozenset[Role]:
        return frozenset(Role(value) for value in self.strings(name, default, {role.value for role in Role}))

    def positive(self, name: str, default: int, minimum: int = 1) -> int:
        value = self.get(name, int, default)
        if value < minimum:
            self.fail(name, f"must be at least {minimum}, not {value}")
        return value

    def when(self, name: str) -> datetime | None:
        value = self.get(name, (datetime, date))
        if value is None:
            return None
        if not isinstance(value, datetime):
            value = datetime.combine(value, time(0), tzinfo=timezone.utc)
        if value.tzinfo is None:
            self.fail(name, "must carry a time zone offset, such as 2026-01-01T00:00:00+08:00")
        return value.astimezone(timezone.utc)


def _user(source: str, user_id: str, table: Any) -> User:
    reader = _Reader(source, table, f"users.{user_id}", _USER_KEYS)
    roles = reader.roles("roles")
    if not roles:
        reader.fail("roles", "must name at least one role")
    user = User(id=user_id, name=reader.get("name", str, user_id), roles=roles,
                token_profile=reader.get("token_profile", str), sign_from=reader.when("sign_from"),
                sign_until=reader.when("sign_until"))
    if user.sign_from and user.sign_until and user.sign_until <= user.sign_from:
        reader.fail("sign_until", "must be later than sign_from")
    if Role.OFFICER in roles and not user.token_profile:
        reader.fail("token_profile", "missing: an officer needs the [tokens.NAME] profile of the key they sign with")
    return user


def _seal(source: str, where: str, table: Any) -> SealAppearance:
    reader = _Reader(source, table, where, _SEAL_KEYS)
    rect = reader.get("rect", list, required=True)
    if len(rect) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rect):
        reader.fail("rect", "must be four numbers [x1, y1, x2, y2] in PDF points")
    x1, y1, x2, y2 = (float(v) for v in rect)
    if x2 <= x1 or y2 <= y1:
        reader.fail("rect", "needs x2 > x1 and y2 > y1")
    page = reader.get("page", int, 1)
    if page == 0 or page < -1:
        reader.fail("page", "must be a page number from 1, or -1 for the last page")
    return SealAppearance(page=page, rect=(x1, y1, x2, y2), image=reader.get("image", str),
                          text=reader.get("text", str))


def _template(source: str, template_id: str, table: Any) -> Template:
    reader = _Reader(source, table, f"templates.{template_id}", _TEMPLATE_KEYS)
    signature_format = reader.get("signature_format", str, "pades")
    if signature_format not in _FORMATS:
        reader.fail("signature_format", f"{signature_format!r} is not one of {', '.join(sorted(_FORMATS))}")
    level = reader.get("signature_level", str, "B-B")
    if level not in _SIGNATURE_LEVELS:
        reader.fail("signature_level", f"{level!r} is not supported; qsign signs {', '.join(sorted(_SIGNATURE_LEVELS))}")
    if signature_format == "cades" and level not in _CADES_LEVELS:
        reader.fail("signature_level", f"a cades template signs {', '.join(sorted(_CADES_LEVELS))}, not {level}")
    tsa = reader.get("tsa", dict)
    if tsa is not None and not isinstance(tsa.get("url"), str):
        reader.fail("tsa", "must contain url, the TSA's http(s) URL")
    document_types = reader.strings("document_types", ("application/pdf",))
    if not document_types:
        reader.fail("document_types", "must name at least one media type")
    if signature_format == "pades" and set(document_types) != {"application/pdf"}:
        reader.fail("document_types", "a pades template accepts application/pdf only")
    seal = _seal(source, reader.key("seal"), table["seal"]) if "seal" in table else None

    template = Template(
        id=template_id,
        name_zh=reader.get("name_zh", str, required=True),
        name_en=reader.get("name_en", str, required=True),
        requester_roles=reader.roles("requester_roles", ("operator", "officer")),
        signer_roles=reader.roles("signer_roles", ("officer",)),
        reviewer_roles=reader.roles("reviewer_roles", ("reviewer",)),
        required_approvals=reader.positive("required_approvals", 1, minimum=0),
        reviewer_not_signer=reader.get("reviewer_not_signer", bool, True),
        document_types=document_types,
        max_bytes=reader.positive("max_bytes", 20 * 1024 * 1024),
        max_pages=reader.positive("max_pages", 500),
        signature_format=signature_format,
        signature_level=level,
        reason=reader.get("reason", str),
        location=reader.get("location", str),
        seal=seal,
        valid_from=reader.when("valid_from"),
        valid_until=reader.when("valid_until"),
        tsa=tsa,
    )
    if template.valid_from and template.valid_until and template.valid_until <= template.valid_from:
        reader.fail("valid_until", "must be later than valid_from")
    return template


def parse_policy(raw: dict[str, Any], source: str = "<policy>") -> Policy:
    """Build a ``Policy`` from the parsed TOML; raise ``PolicyInvalid`` naming the first bad key."""
    top = _Reader(source, raw, "", {"version", "users", "templates", "certificates", "algorithms"})
    version = top.get("version", int, 1)
    if version != 1:
        top.fail("version", f"version {version} is not supported; use 1")

    users_table = _Reader(source, top.get("users", dict, {}), "users", set(top.table.get("users", {})))
    users = {user_id: _user(source, user_id, table) for user_id, table in users_table.table.items()}
    templates_table = _Reader(source, top.get("templates", dict, {}), "templates", set(top.table.get("templates", {})))
    templates = {tid: _template(source, tid, table) for tid, table in templates_table.table.items()}

    certificates = _Reader(source, top.get("certificates", dict, {}), "certificates",
                           {"key_usage", "require_chain", "required_policy_oids", "check_revocation"})
    key_usage = certificates.strings("key_usage", ("non_repudiation",), set(KEY_USAGE_NAMES))
    certificate_policy = CertificatePolicy(
        key_usage=tuple(KEY_USAGE_NAMES[name] for name in key_usage),
        require_chain=certificates.get("require_chain", bool, True),
        required_policy_oids=certificates.strings("required_policy_oids"),
        check_revocation=certificates.get("check_revocation", bool, False),
    )

    algorithms = _Reader(source, top.get("algorithms", dict, {}), "algorithms", {"rsa_min_bits", "ec_curves", "digests"})
    algorithm_policy = AlgorithmPolicy(
        rsa_min_bits=algorithms.positive("rsa_min_bits", 2048, minimum=2048),
        ec_curves=algorithms.strings("ec_curves", ("secp256r1", "secp384r1"), _CURVES),
        digests=algorithms.strings("digests", ("sha256", "sha384", "sha512"), _DIGESTS),
    )
    return Policy(users=users, templates=templates, certificates=certificate_policy, algorithms=algorithm_policy,
                  source=source)


def load_policy(path: Path) -> Policy:
    """Read and validate the policy file at ``path``; raise ``PolicyInvalid`` naming the bad key."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise PolicyInvalid(path=str(path), key="(file)", detail="no such file") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PolicyInvalid(path=str(path), key="(file)", detail=str(error)) from error
    return parse_policy(raw, str(path))
