"""``qsign agent``: serve the API, make pairing codes, list and revoke devices, discover agents."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from qsign.config import apply_environment, load_config, resolve_state_dir
from qsign.errors import InvalidInput
from qsign.i18n import N_, translate

__all__ = ["register"]


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("agent", help="the local agent for officers' phones",
                                   description="Serve the agent API, pair phones, manage paired devices.")
    commands = parser.add_subparsers(dest="agent_command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", parents=[common], help="serve the agent API until SIGTERM",
                                description="Serve the agent API. The first output line is the base URL.")
    serve.add_argument("--config", metavar="FILE", type=Path, help="qsign.toml to use (default: in the state dir)")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="address to listen on (default: agent.listen, else 127.0.0.1:8731); "
                            "any address but loopback gets TLS")
    serve.set_defaults(handler=_serve)

    pair = commands.add_parser("pair", parents=[common], help="make a one-time pairing code for a user",
                               description="Make a one-time pairing code (10 minutes, single use) for --user.")
    pair.add_argument("--user", required=True, metavar="ID", help="policy user the paired device acts for")
    pair.add_argument("--config", metavar="FILE", type=Path, help="qsign.toml to use (default: in the state dir)")
    pair.add_argument("--json", action="store_true", help="print the code and its expiry as JSON")
    pair.set_defaults(handler=_pair)

    devices = commands.add_parser("devices", parents=[common], help="list paired devices, or revoke one")
    devices.add_argument("--revoke", metavar="DEVICE_ID", help="revoke this device's bearer token")
    devices.add_argument("--all", action="store_true", help="list revoked devices and unused codes too")
    devices.add_argument("--config", metavar="FILE", type=Path, help="qsign.toml to use (default: in the state dir)")
    devices.add_argument("--json", action="store_true", help="print JSON")
    devices.set_defaults(handler=_devices)

    discover = commands.add_parser("discover", parents=[common], help="list agents advertised by zeroconf")
    discover.add_argument("--timeout", type=float, default=3.0, help="seconds to listen (default: 3)")
    discover.add_argument("--interface", metavar="ADDRESS",
                          help="IP address of the interface to query on (default: all interfaces)")
    discover.add_argument("--json", action="store_true", help="print JSON")
    discover.set_defaults(handler=_discover)


def _config(args: argparse.Namespace) -> Any:
    state_dir = resolve_state_dir(args.state_dir)
    config = load_config(state_dir, args.config)
    apply_environment(config)
    return config


def _serve(args: argparse.Namespace) -> int:
    from agent.service import serve_until_signal
    from agent.settings import load_agent_settings

    config = _config(args)
    settings = load_agent_settings(config, args.listen)
    asyncio.run(serve_until_signal(config, settings, args.language))
    return 0


def _open_archive(config: Any) -> Any:
    from archive.api import Archive

    return Archive.open(config.state_dir, config)


def _pair(args: argparse.Namespace) -> int:
    from agent.pairing import create_pairing_code
    from agent.settings import load_agent_settings
    from agent.tls import terminal_qr
    from policies import load_policy

    config = _config(args)
    policy = load_policy(load_agent_settings(config).policy_file)
    if args.user not in policy.users:
        raise InvalidInput(N_("User {user} is not in the policy file {path}."), user=args.user, path=policy.source)
    with _open_archive(config) as archive:
        code = create_pairing_code(archive, args.user)
    expires = code.expires_at.isoformat(timespec="seconds")
    if args.json:
        print(json.dumps({"code": code.code, "expires_at": expires, "user": code.user, "device_id": code.device_id}))
        return 0
    print(translate("Pairing code for {user}: {code}", args.language, user=code.user, code=code.code))
    print(translate("Valid once, until {time}.", args.language, time=expires))
    print(terminal_qr(f"qsign-pair:{code.code}"))
    return 0


def _devices(args: argparse.Namespace) -> int:
    from agent.pairing import revoke_device

    config = _config(args)
    with _open_archive(config) as archive:
        if args.revoke:
            device = revoke_device(archive, args.revoke)
            if args.json:
                print(json.dumps({"device_id": device.id, "revoked_at": device.revoked_at}))
            else:
                print(translate("Device {device} revoked.", args.language, device=device.id))
            return 0
        with archive.transaction() as tx:
            devices = tx.list_devices(include_revoked=args.all)
    rows = []
    for device in devices:
        pending = not device.token_hash
        if pending and not args.all:
            continue
        status = "active"
        if device.revoked_at:
            status = "revoked"
        elif pending:
            status = "pending"
        rows.append({"device_id": device.id, "name": device.name, "user": device.owner, "paired_at": device.paired_at,
                     "last_seen_at": device.last_seen_at, "revoked_at": device.revoked_at, "status": status})
    if args.json:
        print(json.dumps({"devices": rows}, ensure_ascii=False))
        return 0
    if not rows:
        print(translate("No paired devices.", args.language))
    for row in rows:
        print(f"{row['device_id']}  {row['status']:8}  {row['user']}  {row['name']}  {row['paired_at']}")
    return 0


def _discover(args: argparse.Namespace) -> int:
    from agent.discovery import discover

    agents = discover(args.timeout, args.interface)
    if args.json:
        print(json.dumps({"agents": [dict(agent.__dict__, base_url=agent.base_url) for agent in agents]},
                         ensure_ascii=False))
        return 0
    if not agents:
        print(translate("No agents found.", args.language))
    for agent in agents:
        print(f"{agent.name}  {agent.base_url}{agent.api_path}  sha256={agent.fingerprint or '-'}")
    return 0
