"""``qsign web passwd USER``: set the web sign-in password of a policy user (read from stdin or a prompt)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from qsign.config import load_config, resolve_state_dir
from qsign.errors import InvalidInput
from qsign.i18n import N_, translate

__all__ = ["register"]


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    web_parser = subparsers.add_parser("web", parents=[common], help="the agent's web pages")
    actions = web_parser.add_subparsers(dest="web_action", required=True)
    passwd = actions.add_parser("passwd", parents=[common],
                                help="set the web sign-in password of a policy user (argon2id hash in the state dir)")
    passwd.add_argument("user", metavar="USER", help="user id of the policy file")
    passwd.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    passwd.set_defaults(handler=run_passwd)


def run_passwd(args: argparse.Namespace) -> int:
    from agent.settings import load_agent_settings
    from agent.web.auth import MIN_PASSWORD_LENGTH, PasswordStore
    from policies import load_policy

    state_dir = resolve_state_dir(args.state_dir)
    config = load_config(state_dir)
    settings = load_agent_settings(config)
    policy = load_policy(settings.policy_file)
    if args.user not in policy.users:
        raise InvalidInput(N_("User {user} is not in the policy file {path}."), user=args.user, path=policy.source)
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(translate("Password for {user}: ", args.language, user=args.user))
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(N_("A password needs at least {count} characters."), count=MIN_PASSWORD_LENGTH)
    PasswordStore(settings.agent_dir / "web-passwords.json").set_password(args.user, password)
    print(translate("Password of {user} set.", args.language, user=args.user))
    return 0
