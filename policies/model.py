"""The policy as typed records: users, templates, certificate and algorithm policy.

``policies.loader.load_policy`` builds these from the TOML file and validates every key there; the
records themselves hold checked values only. Times are timezone-aware ``datetime`` values in UTC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["Role", "User", "SealAppearance", "Template", "CertificatePolicy", "AlgorithmPolicy", "Policy",
           "Decision"]


class Role(str, enum.Enum):
    OFFICER = "officer"
    REVIEWER = "reviewer"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class User:
    """A person the policy knows, with roles and the window in which they may sign."""

    id: str
    name: str
    roles: frozenset[Role]
    #: ``[tokens.NAME]`` profile of ``qsign.toml`` that holds this officer's key; ``None`` for non-signers.
    token_profile: str | None = None
    #: Signing authorisation: the user may sign from ``sign_from`` (inclusive) until ``sign_until`` (exclusive).
    sign_from: datetime | None = None
    sign_until: datetime | None = None

    def has(self, role: Role) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class SealAppearance:
    """The visible seal of a PAdES signature: page (1-based, -1 = last), rectangle in PDF points, image, text."""

    page: int
    rect: tuple[float, float, float, float]
    image: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Template:
    """What a kind of signature request needs: who may take part, which documents, how it is signed."""

    id: str
    name_zh: str
    name_en: str
    #: Roles allowed to create a request with this template.
    requester_roles: frozenset[Role]
    #: Roles the assigned signer must have one of.
    signer_roles: frozenset[Role]
    #: Roles a reviewer must have one of.
    reviewer_roles: frozenset[Role]
    required_approvals: int
    reviewer_not_signer: bool
    #: Media types accepted: ``application/pdf`` or any other type a CAdES detached signature covers.
    document_types: tuple[str, ...]
    max_bytes: int
    max_pages: int
    #: ``pades`` for PDFs, ``cades`` (detached) for other files.
    signature_format: str
    #: PAdES/CAdES baseline level: ``B-B``, ``B-T``, ``B-LT`` or ``B-LTA`` (CAdES: ``B-B`` and ``B-T``).
    signature_level: str
    reason: str | None = None
    location: str | None = None
    seal: SealAppearance | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    #: The template's own TSA settings (keys of qsign.toml's ``[tsa]``); ``None`` uses ``[tsa]``.
    tsa: dict[str, Any] | None = None

    def name(self, language: str) -> str:
        return self.name_zh if language == "zh_CN" else self.name_en


@dataclass(frozen=True)
class CertificatePolicy:
    """Checks on the signer's certificate at signing time."""

    #: Key usage bits that must be set, as cryptography names them (``content_commitment`` = nonRepudiation).
    key_usage: tuple[str, ...] = ("content_commitment",)
    require_chain: bool = True
    #: Certificate policy OIDs of which the certificate must carry every one.
    required_policy_oids: tuple[str, ...] = ()
    #: Check the certificate's revocation status (OCSP or CRL, fetched now) before every signature,
    #: B-B and B-T included; B-LT and B-LTA always check. An unreachable responder fails the signature.
    check_revocation: bool = False


@dataclass(frozen=True)
class AlgorithmPolicy:
    rsa_min_bits: int = 2048
    ec_curves: tuple[str, ...] = ("secp256r1", "secp384r1")
    digests: tuple[str, ...] = ("sha256", "sha384", "sha512")


@dataclass(frozen=True)
class Policy:
    users: dict[str, User]
    templates: dict[str, Template]
    certificates: CertificatePolicy = field(default_factory=CertificatePolicy)
    algorithms: AlgorithmPolicy = field(default_factory=AlgorithmPolicy)
    #: Where the policy was loaded from, for messages.
    source: str = ""


@dataclass(frozen=True)
class Decision:
    """The outcome of one policy check: allowed or not, and the rule that decided.

    ``reason`` is an English message id (translated by the caller) with ``params`` for its placeholders.
    """

    allowed: bool
    rule: str
    reason: str
    params: dict[str, object] = field(default_factory=dict)
