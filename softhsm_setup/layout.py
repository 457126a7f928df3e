"""Paths inside a state dir that ``qsign softhsm init`` writes.

The layout is fixed because every other command finds its tokens, PIN files and trust anchors
through it. Paths written into ``qsign.toml`` are relative to the state dir, so the dir can move.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qsign.config import CONFIG_NAME

__all__ = ["StateLayout"]


@dataclass(frozen=True)
class StateLayout:
    """The files and directories of one state dir."""

    state_dir: Path

    @property
    def config_path(self) -> Path:
        return self.state_dir / CONFIG_NAME

    @property
    def softhsm_dir(self) -> Path:
        return self.state_dir / "softhsm"

    @property
    def softhsm_conf(self) -> Path:
        return self.softhsm_dir / "softhsm2.conf"

    @property
    def token_dir(self) -> Path:
        return self.softhsm_dir / "tokens"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def root_certificate(self) -> Path:
        return self.pki_dir / "root-ca.pem"

    @property
    def root_key(self) -> Path:
        return self.pki_dir / "root-ca.key.pem"

    @property
    def intermediate_certificate(self) -> Path:
        return self.pki_dir / "intermediate-ca.pem"

    @property
    def intermediate_key(self) -> Path:
        return self.pki_dir / "intermediate-ca.key.pem"

    @property
    def tsa_certificate(self) -> Path:
        return self.pki_dir / "tsa.pem"

    @property
    def tsa_key(self) -> Path:
        return self.pki_dir / "tsa.key.pem"

    @property
    def certomancer_config(self) -> Path:
        """``pki/certomancer.yml``: the certomancer configuration the test PKI is issued and served from."""
        return self.pki_dir / "certomancer.yml"

    def public_key(self, key_label: str) -> Path:
        """Return ``pki/<key label>.pub.pem``, the public half of a key on a token."""
        return self.pki_dir / f"{key_label}.pub.pem"

    def end_entity_certificate(self, key_label: str) -> Path:
        """Return ``pki/<key label>.pem``, the certificate of a key on a token."""
        return self.pki_dir / f"{key_label}.pem"

    def relative(self, path: Path) -> str:
        """Return ``path`` relative to the state dir, as ``qsign.toml`` stores it."""
        return path.relative_to(self.state_dir).as_posix()
