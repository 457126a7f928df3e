"""``qsign verify FILE`` (validate a PDF or CMS signature) and ``qsign verify serve`` (the HTTP service).

Both share the ``verify`` command: argparse cannot tell a sub-action from a file name in the same
position, so the handler dispatches on the first positional argument. A file really named ``serve`` is
verified with ``qsign verify ./serve``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from qsign.config import load_config, resolve_state_dir
from qsign.errors import InvalidInput
from qsign.i18n import N_
from verify_service.trust import TrustSettings, trust_from_config, trust_from_files

__all__ = ["register"]

_logger = logging.getLogger(__name__)

SERVE_ACTION = "serve"

#: Exit codes: every signature passed; something failed or is unknown; the input could not be read.
EXIT_VALID, EXIT_NOT_VALID = 0, 1

_SERVE_OPTIONS_MESSAGE = N_("--content and --json do not apply to 'qsign verify serve'.")
_LISTEN_OPTION_MESSAGE = N_("--listen applies only to 'qsign verify serve'.")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "verify", parents=[common],
        help="verify the signatures of a PDF or CMS file, or run the verification service",
        description="Verify every signature and document timestamp of a PDF, or a CMS signature (.p7s). "
                    "Exit code 0: every signature is intact, valid and trusted; 1: otherwise; 2: bad input. "
                    "'qsign verify serve' runs the HTTP verification service instead.",
    )
    parser.add_argument("file", metavar="FILE|serve",
                        help="PDF or CMS file to verify, or 'serve' to start the HTTP service")
    parser.add_argument("--content", metavar="FILE", help="signed file of a detached CMS signature")
    parser.add_argument("--trust", metavar="CA.pem", action="append", default=[],
                        help="trust anchor certificate file, PEM or DER (repeatable; default: the [trust] "
                             "anchors of qsign.toml in the state dir)")
    parser.add_argument("--online", action="store_true",
                        help="allow fetching certificates, CRLs and OCSP responses over the network "
                             "(default: offline)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="serve only: address to bind (default: [verify_service] listen, else "
                             "127.0.0.1:8470; port 0 picks a free port)")
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


def run_verify(args: argparse.Namespace) -> int:
    """Handle ``qsign verify``: dispatch to the service, or verify one file and print the report."""
    # Imported here because importing pyHanko and aiohttp takes about 0.6 s (2-core dev VM), which every other
    # qsign command would pay when the dispatcher registers this one.
    from verify_service.report import Verdict
    from verify_service.server import serve
    from verify_service.settings import service_settings
    from verify_service.summary import format_summary
    from verify_service.validate import verify_file

    _quiet_pyhanko(args.verbose)
    config = load_config(resolve_state_dir(args.state_dir))
    trust = _trust_settings(args, config)

    if args.file == SERVE_ACTION:
        if args.content or args.json:
            raise InvalidInput(_SERVE_OPTIONS_MESSAGE)
        return serve(service_settings(config, trust), args.listen)
    if args.listen:
        raise InvalidInput(_LISTEN_OPTION_MESSAGE)

    report = verify_file(args.file, args.content, trust)
    if args.json:
        print(report.to_json())
    else:
        print(format_summary(report, args.language))
    sys.stdout.flush()
    return EXIT_VALID if report.verdict is Verdict.VALID else EXIT_NOT_VALID

