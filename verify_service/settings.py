"""The ``[verify_service]`` section of ``qsign.toml`` and the listen address of the HTTP service.

Keys and defaults::

    [verify_service]
    listen = "127.0.0.1:8470"   # HOST:PORT the HTTP service binds; port 0 picks a free port
    max_upload_mb = 100         # largest request body accepted, in MiB (file and content together)
    workers = 2                 # validations that run at the same time, each in its own process
    timeout_seconds = 60        # wall-clock limit of one validation; the process is killed after it
    memory_mb = 1024            # address-space limit (RLIMIT_AS) of one validation process
    require_login = false       # true: every request needs an auditor login or API token, even when
                                # no auditor account exists yet (default: only once one exists)
    online = false              # true: fetch CRLs, OCSP responses and certificates over the network, as
                                # "qsign verify --online" does (default: embedded revocation data only)

    [verify_service.policy]     # algorithm policy, see verify_service.policy
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from qsign.config import Config
from qsign.errors import ConfigError
from verify_service.errors import ListenAddressInvalid
from verify_service.policy import AlgorithmPolicy, policy_from_table
from verify_service.trust import TrustSettings

__all__ = ["DEFAULT_LISTEN", "ServiceSettings", "parse_listen", "service_settings"]

DEFAULT_LISTEN = "127.0.0.1:8470"
DEFAULT_MAX_UPLOAD_MB = 100
DEFAULT_WORKERS = 2
DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_MEMORY_MB = 1024
_KEYS = {"listen", "max_upload_mb", "workers", "timeout_seconds", "memory_mb", "require_login", "online", "policy"}


@dataclass(frozen=True)
class ServiceSettings:
    """Settings of one running verification service."""

    trust: TrustSettings = field(default_factory=TrustSettings)
    listen: str = DEFAULT_LISTEN
    #: Largest accepted request body in bytes.
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    workers: int = DEFAULT_WORKERS
    policy: AlgorithmPolicy = field(default_factory=AlgorithmPolicy)
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    memory_mb: int = DEFAULT_MEMORY_MB
    require_login: bool = False
    #: State dir: reports, auditor accounts and the archive live under it. ``None``: nothing is stored.
    state_dir: Path | None = None

    @property
    def max_upload_mb(self) -> float:
        return self.max_upload_bytes / (1024 * 1024)


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:8470`` for IPv6) into host and port; raise ``ListenAddressInvalid``."""
    host, separator, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not separator or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ListenAddressInvalid(value=value)
    return host, int(port_text)


def service_settings(config: Config, trust: TrustSettings) -> ServiceSettings:
    """Read ``[verify_service]`` from the config; raise ``ConfigError`` naming a bad key.

    ``online = true`` turns fetching on in the returned ``trust``; ``online`` already set in ``trust``
    (``--online``) stays on.
    """
    table = config.section("verify_service")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(detail=f"unknown key verify_service.{unknown[0]} (allowed: {', '.join(sorted(_KEYS))})")

    listen = table.get("listen", DEFAULT_LISTEN)
    if not isinstance(listen, str):
        raise ConfigError(detail="verify_service.listen must be a string such as \"127.0.0.1:8470\"")
    parse_listen(listen)

    max_upload_mb = table.get("max_upload_mb", DEFAULT_MAX_UPLOAD_MB)
    if isinstance(max_upload_mb, bool) or not isinstance(max_upload_mb, int | float) or max_upload_mb <= 0:
        raise ConfigError(detail="verify_service.max_upload_mb must be a positive number of MiB")

    workers = table.get("workers", DEFAULT_WORKERS)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(detail="verify_service.workers must be an integer of at least 1")

    timeout = table.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(detail="verify_service.timeout_seconds must be a positive number of seconds")

    memory_mb = table.get("memory_mb", DEFAULT_MEMORY_MB)
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 64:
        raise ConfigError(detail="verify_service.memory_mb must be an integer of at least 64")

    require_login = table.get("require_login", False)
    if not isinstance(require_login, bool):
        raise ConfigError(detail="verify_service.require_login must be true or false")

    online = table.get("online", False)
    if not isinstance(online, bool):
        raise ConfigError(detail="verify_service.online must be true or false")
    if online and not trust.online:
        trust = replace(trust, online=True)

    policy_table = table.get("policy", {})
    if not isinstance(policy_table, dict):
        raise ConfigError(detail="verify_service.policy must be a table")

    return ServiceSettings(trust=trust, listen=listen, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                           workers=workers, policy=policy_from_table(policy_table), timeout_seconds=float(timeout),
                           memory_mb=memory_mb, require_login=require_login, state_dir=config.state_dir)
