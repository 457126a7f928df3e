"""The ``[agent]`` settings: listen address, when TLS is required, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.server import _host_name, allowed_hosts
from agent.settings import load_agent_settings, parse_listen
from qsign.config import Config
from qsign.errors import ConfigError


def _config(tmp_path: Path, **agent) -> Config:
    return Config(state_dir=tmp_path, path=tmp_path / "qsign.toml", raw={"agent": agent})


@pytest.mark.parametrize(("listen", "tls_mode", "use_tls"), [
    ("127.0.0.1:8731", "auto", False),
    ("localhost:8731", "auto", False),
    ("[::1]:8731", "auto", False),
    ("127.0.0.1:8731", "always", True),
    ("0.0.0.0:8731", "auto", True),
    ("192.0.2.10:8731", "auto", True),
])
def test_tls_outside_loopback(tmp_path, listen, tls_mode, use_tls):
    settings = load_agent_settings(_config(tmp_path, tls=tls_mode), listen)
    assert settings.use_tls is use_tls


@pytest.mark.parametrize("value", ["8731", "host:", ":80", "host:99999", "host:port"])
def test_bad_listen_is_rejected(value):
    with pytest.raises(ConfigError):
        parse_listen(value)


@pytest.mark.parametrize(("key", "value"), [
    ("tls", "sometimes"),
    ("token_wait_seconds", 0),
    ("max_upload_bytes", "big"),
    ("advertise", "yes"),
    ("colour", "red"),
    ("allowed_hosts", [1]),
])
def test_bad_value_names_key(tmp_path, key, value):
    with pytest.raises(ConfigError) as raised:
        load_agent_settings(_config(tmp_path, **{key: value}))
    assert f"agent.{key}" in raised.value.message("en")


def test_defaults(tmp_path):
    settings = load_agent_settings(_config(tmp_path))

    assert (settings.host, settings.port) == ("127.0.0.1", 8731)
    assert settings.policy_file == tmp_path / "policy.toml"
    assert settings.sign_attempts_per_minute == 5


@pytest.mark.parametrize(("header", "allowed"), [
    ("127.0.0.1:8731", True),
    ("localhost", True),
    ("[::1]:8731", True),
    ("agent-one.local:8731", True),
    ("tax.example:8731", True),
    ("evil.example", False),
    ("127.0.0.1.evil.example", False),
    ("", False),
])
def test_host_allow_list(tmp_path, header, allowed):
    settings = load_agent_settings(_config(tmp_path, name="agent-one", allowed_hosts=["tax.example"]))
    assert (_host_name(header) in allowed_hosts(settings)) is allowed
