"""The ``[agent]`` section of ``qsign.toml``, parsed and validated.

Keys and defaults (relative paths are relative to the state dir)::

    [agent]
    name = "<host name>"              # shown in the zeroconf advertisement
    listen = "127.0.0.1:8731"         # HOST:PORT; any host but a loopback address gets TLS
    tls = "auto"                      # "auto": TLS except on loopback; "always": TLS on loopback too
    policy_file = "policy.toml"
    allowed_hosts = []                # extra Host header names; loopback names and the listen host are allowed
    max_upload_bytes = 52428800       # largest request body, in bytes
    token_wait_seconds = 60           # how long signing waits for the signer's token
    sign_attempts_per_minute = 5      # per device and per user
    advertise = true                  # zeroconf advertisement of _qsign._tcp.local.
    pause_before_sign_seconds = 0.0   # tests only: pause after "signing" is reported, before the token signs
    token_source = "auto"             # "pkcs11", "pcsc", or "auto": "pcsc" when [pcsc.certificates] is set
    relay_listen = ""                 # HOST:PORT of the TLS relay for phone card readers; "" = no relay
    relay_vpcd = "127.0.0.1:35963"    # where the relay reaches vpcd (keep it on loopback)
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from qsign.config import Config
from qsign.errors import ConfigError

__all__ = ["AgentSettings", "load_agent_settings", "parse_listen", "DEFAULT_PORT"]

DEFAULT_PORT = 8731
_KEYS = {"name", "listen", "tls", "policy_file", "allowed_hosts", "max_upload_bytes", "token_wait_seconds",
         "sign_attempts_per_minute", "advertise", "pause_before_sign_seconds", "token_source", "relay_listen",
         "relay_vpcd"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class AgentSettings:
    state_dir: Path
    name: str
    host: str
    port: int
    tls_mode: str
    policy_file: Path
    allowed_hosts: list[str] = field(default_factory=list)
    max_upload_bytes: int = 50 * 1024 * 1024
    token_wait_seconds: float = 60.0
    sign_attempts_per_minute: int = 5
    advertise: bool = True
    pause_before_sign_seconds: float = 0.0
    token_source: str = "auto"
    #: ``(host, port)`` of the phone reader relay, or ``None`` when there is none.
    relay_listen: tuple[str, int] | None = None
    relay_vpcd: tuple[str, int] = ("127.0.0.1", 35963)

    @property
    def use_tls(self) -> bool:
        return self.tls_mode == "always" or self.host not in LOOPBACK_HOSTS

    @property
    def agent_dir(self) -> Path:
        return self.state_dir / "agent"


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6); raise ``ConfigError`` for anything else."""
    host, separator, port_text = value.rpartition(":")
    if not separator or not port_text.isdigit() or not host:
        raise ConfigError(detail=f"agent.listen must be HOST:PORT, not {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ConfigError(detail=f"agent.listen port {port} is out of range")
    return host.strip("[]"), port


def load_agent_settings(config: Config, listen: str | None = None) -> AgentSettings:
    """Read ``[agent]`` from ``config``; ``listen`` (from ``--listen``) overrides ``agent.listen``."""
    table = config.section("agent")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(detail=f"unknown key agent.{unknown[0]} (allowed: {', '.join(sorted(_KEYS))})")

    def typed(key: str, kind: type | tuple[type, ...], default: object) -> object:
        value = table.get(key, default)
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise ConfigError(detail=f"agent.{key} has the wrong type {type(value).__name__}")
        return value

    host, port = parse_listen(listen or str(typed("listen", str, f"127.0.0.1:{DEFAULT_PORT}")))
    tls_mode = typed("tls", str, "auto")
    if tls_mode not in ("auto", "always"):
        raise ConfigError(detail=f"agent.tls must be \"auto\" or \"always\", not {tls_mode!r}")
    allowed = typed("allowed_hosts", list, [])
    if not all(isinstance(item, str) for item in allowed):
        raise ConfigError(detail="agent.allowed_hosts must be a list of strings")
    numbers = {key: typed(key, (int, float), default) for key, default in (
        ("max_upload_bytes", 50 * 1024 * 1024), ("token_wait_seconds", 60), ("sign_attempts_per_minute", 5),
        ("pause_before_sign_seconds", 0))}
    for key, value in numbers.items():
        if value < 0 or (key != "pause_before_sign_seconds" and value == 0):
            raise ConfigError(detail=f"agent.{key} must be positive, not {value}")

    token_source = str(typed("token_source", str, "auto"))
    if token_source not in ("auto", "pkcs11", "pcsc"):
        raise ConfigError(detail=f"agent.token_source must be \"auto\", \"pkcs11\" or \"pcsc\", not {token_source!r}")
    relay_text = str(typed("relay_listen", str, ""))
    relay_listen = parse_listen(relay_text) if relay_text else None
    relay_vpcd = parse_listen(str(typed("relay_vpcd", str, "127.0.0.1:35963")))

    return AgentSettings(
        state_dir=config.state_dir,
        name=str(typed("name", str, socket.gethostname())),
        host=host,
        port=port,
        tls_mode=str(tls_mode),
        policy_file=config.resolve(str(typed("policy_file", str, "policy.toml"))),
        allowed_hosts=list(allowed),
        max_upload_bytes=int(numbers["max_upload_bytes"]),
        token_wait_seconds=float(numbers["token_wait_seconds"]),
        sign_attempts_per_minute=int(numbers["sign_attempts_per_minute"]),
        advertise=bool(typed("advertise", bool, True)),
        pause_before_sign_seconds=float(numbers["pause_before_sign_seconds"]),
        token_source=token_source,
        relay_listen=relay_listen,
        relay_vpcd=relay_vpcd,
    )
