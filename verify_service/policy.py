"""Algorithm strength policy: which digest algorithms and key sizes a signature may use.

Keys of ``[verify_service.policy]`` in ``qsign.toml`` and their defaults::

    [verify_service.policy]
    name = "qsign-default"
    weak_digest_algorithms = ["md5", "sha1"]   # refused in signatures and certificate paths
    min_rsa_bits = 2048
    min_ec_bits = 256

A signature that breaks the policy is INDETERMINATE with CRYPTO_CONSTRAINTS_FAILURE: the algorithm
may have been acceptable when the signature was made, which only a proof of existence could show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qsign.errors import ConfigError
from verify_service.report import PolicyInfo, SignatureReport

__all__ = ["AlgorithmPolicy", "policy_from_table"]

_KEYS = {"name", "weak_digest_algorithms", "min_rsa_bits", "min_ec_bits"}


@dataclass(frozen=True)
class AlgorithmPolicy:
    """Minimum algorithm strength for signer certificates and digests."""

    name: str = "qsign-default"
    weak_digest_algorithms: frozenset[str] = field(default_factory=lambda: frozenset({"md5", "sha1"}))
    min_rsa_bits: int = 2048
    min_ec_bits: int = 256

    def violations(self, report: SignatureReport) -> list[str]:
        """Return the error codes of every rule the signature record breaks (empty when it complies)."""
        codes = []
        if report.digest_algorithm and report.digest_algorithm.lower() in self.weak_digest_algorithms:
            codes.append("weak_digest_algorithm")
        certificate = report.signer_certificate
        if certificate is not None and certificate.key_bits is not None:
            minimum = {"rsa": self.min_rsa_bits, "ec": self.min_ec_bits}.get(certificate.key_algorithm or "")
            if minimum is not None and certificate.key_bits < minimum:
                codes.append("weak_key")
        return codes

    def info(self) -> PolicyInfo:
        """Return the policy as the report shows it."""
        return PolicyInfo(name=self.name, weak_digest_algorithms=sorted(self.weak_digest_algorithms),
                          min_rsa_bits=self.min_rsa_bits, min_ec_bits=self.min_ec_bits)


def policy_from_table(table: dict[str, Any]) -> AlgorithmPolicy:
    """Parse ``[verify_service.policy]``; raise ``ConfigError`` naming a bad key."""
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(detail=f"unknown key verify_service.policy.{unknown[0]} "
                                 f"(allowed: {', '.join(sorted(_KEYS))})")
    default = AlgorithmPolicy()
    name = table.get("name", default.name)
    weak = table.get("weak_digest_algorithms", sorted(default.weak_digest_algorithms))
    if not isinstance(name, str):
        raise ConfigError(detail="verify_service.policy.name must be a string")
    if not isinstance(weak, list) or not all(isinstance(item, str) for item in weak):
        raise ConfigError(detail="verify_service.policy.weak_digest_algorithms must be a list of names "
                                 "such as [\"md5\", \"sha1\"]")
    sizes = {}
    for key in ("min_rsa_bits", "min_ec_bits"):
        value = table.get(key, getattr(default, key))
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(detail=f"verify_service.policy.{key} must be a non-negative integer")
        sizes[key] = value
    return AlgorithmPolicy(name=name, weak_digest_algorithms=frozenset(item.lower() for item in weak), **sizes)
