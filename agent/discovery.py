"""Zeroconf (mDNS/DNS-SD) advertisement of the agent as ``_qsign._tcp.local.``, and browsing for agents.

The TXT record carries the API version and path, the SHA-256 fingerprint of the agent's TLS certificate
(empty when it serves plain HTTP on loopback), the scheme and the agent name. The advertisement is sent
on the interface the agent listens on only: an agent on 127.0.0.1 is advertised on loopback only.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from dataclasses import dataclass

from zeroconf import InterfaceChoice, ServiceBrowser, ServiceInfo, ServiceListener, Zeroconf

__all__ = ["SERVICE_TYPE", "Advertisement", "DiscoveredAgent", "advertise", "discover"]

_logger = logging.getLogger(__name__)

SERVICE_TYPE = "_qsign._tcp.local."


@dataclass(frozen=True)
class DiscoveredAgent:
    name: str
    address: str
    port: int
    scheme: str
    api_path: str
    api_version: str
    fingerprint: str

    @property
    def base_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}"


def _interfaces_for(host: str) -> list[str] | InterfaceChoice:
    if host in ("0.0.0.0", "::", ""):
        return InterfaceChoice.All
    return [host]


def _addresses_for(host: str) -> list[bytes]:
    if host in ("0.0.0.0", "::", "", "localhost"):
        host = "127.0.0.1" if host == "localhost" else socket.gethostbyname(socket.gethostname())
    return [ipaddress.ip_address(host).packed]


class Advertisement:
    """A registered service; ``close`` withdraws it (goodbye packets) and stops the responder."""

    def __init__(self, zeroconf: Zeroconf, info: ServiceInfo) -> None:
        self._zeroconf = zeroconf
        self._info = info
        self._extra: list[ServiceInfo] = []

    def add(self, info: ServiceInfo) -> None:
        """Advertise another service of this agent (such as the card reader relay) on the same responder."""
        self._zeroconf.register_service(info, allow_name_change=True)
        self._extra.append(info)
        _logger.info("advertising %s port %d", info.name, info.port)

    def close(self) -> None:
        try:
            for info in self._extra:
                self._zeroconf.unregister_service(info)
            self._zeroconf.unregister_service(self._info)
        finally:
            self._zeroconf.close()
        _logger.info("zeroconf advertisement %s withdrawn", self._info.name)


def advertise(name: str, host: str, port: int, scheme: str, fingerprint: str, api_path: str = "/api/v1") -> Advertisement:
    """Register the agent as ``<name>._qsign._tcp.local.`` on the listening interface."""
    zeroconf = Zeroconf(interfaces=_interfaces_for(host))
    safe_name = name.replace(".", "-")[:50] or "qsign-agent"
    info = ServiceInfo(
        SERVICE_TYPE, f"{safe_name}.{SERVICE_TYPE}", addresses=_addresses_for(host), port=port,
        properties={"api": "v1", "path": api_path, "scheme": scheme, "fp": fingerprint, "name": name},
        server=f"{safe_name}.local.")
    try:
        zeroconf.register_service(info, allow_name_change=True)
    except BaseException:
        zeroconf.close()
        raise
    _logger.info("advertising %s on %s port %d", info.name, host, port)
    return Advertisement(zeroconf, info)


class _Collector(ServiceListener):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.names.add(name)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.names.add(name)

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.names.discard(name)


def _text(properties: dict[bytes, bytes | None], key: str) -> str:
    value = properties.get(key.encode())
    return value.decode("utf-8", "replace") if value else ""


def discover(timeout: float = 3.0, interface: str | None = None) -> list[DiscoveredAgent]:
    """Browse for ``_qsign._tcp.local.`` for ``timeout`` seconds and return the agents found.

    ``interface`` (an IP address) limits the queries to that interface; by default all are used.
    """
    zeroconf = Zeroconf(interfaces=[interface] if interface else InterfaceChoice.All)
    collector = _Collector()
    browser = ServiceBrowser(zeroconf, SERVICE_TYPE, collector)
    try:
        time.sleep(timeout)
        agents = []
        for service_name in sorted(collector.names):
            info = zeroconf.get_service_info(SERVICE_TYPE, service_name, timeout=int(timeout * 1000))
            if info is None or not info.parsed_addresses():
                continue
            properties = info.properties or {}
            agents.append(DiscoveredAgent(
                name=_text(properties, "name") or service_name, address=info.parsed_addresses()[0], port=info.port,
                scheme=_text(properties, "scheme") or "https", api_path=_text(properties, "path"),
                api_version=_text(properties, "api"), fingerprint=_text(properties, "fp")))
        return agents
    finally:
        browser.cancel()
        zeroconf.close()
