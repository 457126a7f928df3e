"""``qsign softhsm``: SoftHSM2 test tokens. ``init`` makes a ready state dir; ``serve-pki`` serves its
test PKI's OCSP responders, CRLs and TSA on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
import logging

from qsign.config import resolve_state_dir
from softhsm_setup.card_cli import register_card
from softhsm_setup.init import init_state
from softhsm_setup.summary import format_report, report_json

__all__ = ["register"]

_logger = logging.getLogger(__name__)

_INIT_DESCRIPTION = (
    "Write a SoftHSM2 config inside the state dir, create the tokens qsign-officer and qsign-hsm with "
    "keys generated on them, issue their certificates from a test root and intermediate CA, and write "
    "qsign.toml and the test PIN files. Running it again keeps what exists and adds what is missing."
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``qsign softhsm init`` to the ``qsign`` parser."""
    softhsm = subparsers.add_parser("softhsm", help="SoftHSM2 test tokens with a test PKI",
                                    description="SoftHSM2 test tokens with a test PKI.")
    commands = softhsm.add_subparsers(dest="softhsm_command", metavar="SUBCOMMAND", required=True)

    init = commands.add_parser("init", parents=[common], help="make SoftHSM2 test tokens, keys and certificates",
                               description=_INIT_DESCRIPTION)
    init.add_argument("--json", action="store_true", help="print the result as one JSON object")
    init.add_argument("--pki-base-url", metavar="URL",
                      help="base URL of the OCSP, CRL and TSA services written into new certificates and "
                           "qsign.toml (default: [pki] base_url of qsign.toml, else http://127.0.0.1:8471)")
    init.set_defaults(handler=run_init)

    serve = commands.add_parser("serve-pki", parents=[common],
                                help="serve the test PKI's OCSP responders, CRLs and TSA on 127.0.0.1",
                                description="Serve the OCSP responders, CRLs, CA certificates and the RFC 3161 "
                                            "TSA of the state dir's test PKI in the foreground, at [pki] base_url "
                                            "of qsign.toml, until interrupted (Ctrl+C).")
    serve.set_defaults(handler=run_serve_pki)

    register_card(commands, common)


def run_init(args: argparse.Namespace) -> int:
    """Run ``qsign softhsm init`` and print its report; return the exit code."""
    state_dir = resolve_state_dir(args.state_dir)
    report = init_state(state_dir, pki_base_url=args.pki_base_url)

    if args.json:
        print(json.dumps(report_json(report), ensure_ascii=False, indent=2))
    else:
        print(format_report(report, args.language), end="")
    return 0


def run_serve_pki(args: argparse.Namespace) -> int:
    """Run ``qsign softhsm serve-pki`` until interrupted; return the exit code."""
    from softhsm_setup.serve import serve_pki

    return serve_pki(resolve_state_dir(args.state_dir), args.language)
