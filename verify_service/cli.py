"""``qsign verify FILE …`` (validate PDFs or CMS signatures), ``qsign verify serve`` (the HTTP service) and
``qsign verify users add|list`` / ``qsign verify tokens create`` (auditor accounts).

All share the ``verify`` command: argparse cannot tell a sub-action from a file name in the same
position, so the handler dispatches on the first positional argument. A file really named ``serve``,
``users`` or ``tokens`` is verified with ``qsign verify ./serve``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from qsign.config import load_config, resolve_state_dir
from qsign.errors import InvalidInput, QsignError
from qsign.i18n import N_, gettext_for
from verify_service.trust import TrustSettings, trust_from_config, trust_from_files

__all__ = ["register"]

_logger = logging.getLogger(__name__)

SERVE_ACTION = "serve"
USERS_ACTION = "users"
TOKENS_ACTION = "tokens"

#: Exit codes: every signature of every file is TOTAL_PASSED; something failed or is unknown; a file could
#: not be read.
EXIT_VALID, EXIT_NOT_VALID, EXIT_BAD_INPUT = 0, 1, 2

_SERVE_OPTIONS_MESSAGE = N_("--content and --json do not apply to 'qsign verify serve'.")
_LISTEN_OPTION_MESSAGE = N_("--listen applies only to 'qsign verify serve'.")
_CONTENT_MANY_MESSAGE = N_("--content applies to a single detached CMS signature, not to several files.")
_USERS_USAGE_MESSAGE = N_("Usage: qsign verify users add NAME | qsign verify users list | "
                          "qsign verify tokens create NAME.")
_PASSWORD_MISMATCH_MESSAGE = N_("The two passwords differ.")
_PASSWORD_SHORT_MESSAGE = N_("The password must have at least 10 characters.")
_AT_INVALID_MESSAGE = N_("Invalid --at time {value}: use ISO 8601 with a time zone, e.g. 2026-01-31T12:00:00+08:00.")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "verify", parents=[common],
        help="verify the signatures of PDF or CMS files, run the verification service, manage auditors",
        description="Verify every signature and document timestamp of PDFs, or CMS signatures (.p7s). "
                    "Exit code 0: every signature of every file is TOTAL_PASSED; 1: otherwise; 2: a file "
                    "could not be read. 'qsign verify serve' runs the HTTP verification service; "
                    "'qsign verify users add NAME|list' and 'qsign verify tokens create NAME' manage auditor "
                    "accounts and API tokens.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE|serve|users|tokens",
                        help="PDF or CMS files to verify, or a sub-action")
    parser.add_argument("--content", metavar="FILE", help="signed file of a detached CMS signature")
    parser.add_argument("--trust", metavar="CA.pem", action="append", default=[],
                        help="trust anchor certificate file, PEM or DER (repeatable; default: the [trust] "
                             "anchors of qsign.toml in the state dir)")
    parser.add_argument("--online", action="store_true",
                        help="allow fetching certificates, CRLs and OCSP responses over the network "
                             "(default: [verify_service] online, else offline: embedded revocation data only)")
    parser.add_argument("--at", metavar="TIME",
                        help="validation time, ISO 8601 with a time zone (default: now)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="serve only: address to bind (default: [verify_service] listen, else "
                             "127.0.0.1:8470; port 0 picks a free port)")
    parser.add_argument("--password-stdin", action="store_true",
                        help="users add only: read the password from the first line of stdin")
    parser.add_argument("--label", default="", help="tokens create only: a label that describes what the token is for")
    parser.set_defaults(handler=run_verify)


def _trust_settings(args: argparse.Namespace, config) -> TrustSettings:
    if args.trust:
        return trust_from_files([Path(path) for path in args.trust], config.intermediates,
                                online=args.online)
    return trust_from_config(config, online=args.online)


def _quiet_pyhanko(verbose: bool) -> None:
    # pyHanko logs every untrusted chain as a warning with a traceback, which the report already states.
    if not verbose:
        logging.getLogger("pyhanko").setLevel(logging.ERROR)
        logging.getLogger("pyhanko_certvalidator").setLevel(logging.ERROR)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise InvalidInput(_PASSWORD_MISMATCH_MESSAGE)
    if len(password) < 10:
        raise InvalidInput(_PASSWORD_SHORT_MESSAGE)
    return password


def _run_accounts(args: argparse.Namespace, state_dir: Path) -> int:
    """Handle ``users add NAME``, ``users list`` and ``tokens create NAME``."""
    from verify_service.accounts import AccountStore

    store = AccountStore(state_dir)
    action = args.files[:2]
    _ = gettext_for(args.language)
    if action == [USERS_ACTION, "add"] and len(args.files) == 3:
        account = store.add_user(args.files[2], _read_password(args))
        print(_("Auditor account {name} created.").format(name=account.name))
        return 0
    if action == [USERS_ACTION, "list"] and len(args.files) == 2:
        accounts = store.list_users()
        if args.json:
            print(json.dumps([account.__dict__ for account in accounts], ensure_ascii=False, indent=2))
        for account in accounts if not args.json else ():
            print(f"{account.name}\t{account.role}\t{account.created_at}\t"
                  + _("{count} API tokens").format(count=account.tokens))
        return 0
    if action == [TOKENS_ACTION, "create"] and len(args.files) == 3:
        token = store.create_token(args.files[2], args.label)
        print(token)
        print(_("Store this token now: it is shown only once."), file=sys.stderr)
        return 0
    raise InvalidInput(_USERS_USAGE_MESSAGE)


def _parse_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidInput(_AT_INVALID_MESSAGE, value=value)
    return moment


def run_verify(args: argparse.Namespace) -> int:
    """Handle ``qsign verify``: dispatch to a sub-action, or verify the files and print the reports."""
    # Imported here because importing pyHanko and aiohttp takes about 0.6 s (2-core dev VM), which every other
    # qsign command would pay when the dispatcher registers this one.
    from verify_service.report import Indication
    from verify_service.sandbox import Limits, verify_isolated
    from verify_service.server import serve
    from verify_service.settings import service_settings
    from verify_service.summary import format_summary, format_table

    _quiet_pyhanko(args.verbose)
    state_dir = resolve_state_dir(args.state_dir)
    config = load_config(state_dir)
    first = args.files[0]
    if first in (USERS_ACTION, TOKENS_ACTION):
        return _run_accounts(args, state_dir)

    trust = _trust_settings(args, config)
    settings = service_settings(config, trust)
    if first == SERVE_ACTION:
        if args.content or args.json or len(args.files) > 1:
            raise InvalidInput(_SERVE_OPTIONS_MESSAGE)
        return serve(settings, args.listen)
    if args.listen:
        raise InvalidInput(_LISTEN_OPTION_MESSAGE)
    if args.content and len(args.files) > 1:
        raise InvalidInput(_CONTENT_MANY_MESSAGE)

    at = _parse_at(args.at)
    limits = Limits(timeout_seconds=settings.timeout_seconds, memory_mb=settings.memory_mb)

    def verify(path: str):
        report = verify_isolated(path, args.content, settings.trust, policy=settings.policy, at=at, limits=limits)
        report.requested_by = "cli"
        return report

    if len(args.files) == 1:
        # One file: a bad input is the command's error (exit code 2, the dispatcher prints it).
        report = verify(first)
        print(report.to_json() if args.json else format_summary(report, args.language))
        sys.stdout.flush()
        return EXIT_VALID if report.verdict is Indication.TOTAL_PASSED else EXIT_NOT_VALID

    results: list[tuple[str, object]] = []
    for path in args.files:
        try:
            results.append((path, verify(path)))
        except QsignError as error:
            _logger.info("cannot verify %s: %s", path, error.code)
            results.append((path, error))
    if args.json:
        print(json.dumps(_many_to_dict(results, args.language), ensure_ascii=False, indent=2))
    else:
        print(format_table(results, args.language))
    sys.stdout.flush()
    if any(isinstance(result, QsignError) for _, result in results):
        return EXIT_BAD_INPUT
    passed = all(result.verdict is Indication.TOTAL_PASSED for _, result in results)
    return EXIT_VALID if passed else EXIT_NOT_VALID


def _many_to_dict(results: list[tuple[str, object]], language: str) -> dict:
    """Return the JSON of several files: the worst verdict, then one report or error per file."""
    from verify_service.report import Indication

    items = []
    verdicts = []
    for path, result in results:
        if isinstance(result, QsignError):
            items.append({"path": path, "error": result.to_dict(language)})
            verdicts.append(Indication.INDETERMINATE)
        else:
            items.append({"path": path, "report": result.to_dict()})
            verdicts.append(result.verdict)
    if Indication.TOTAL_FAILED in verdicts:
        verdict = Indication.TOTAL_FAILED
    elif Indication.INDETERMINATE in verdicts:
        verdict = Indication.INDETERMINATE
    else:
        verdict = Indication.TOTAL_PASSED
    return {"verdict": str(verdict), "files": items}
