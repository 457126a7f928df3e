"""``qsign softhsm``: SoftHSM2 test tokens. Its one subcommand, ``init``, makes a ready state dir."""

from __future__ import annotations

import argparse
import json
import logging

from qsign.config import resolve_state_dir
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
    init.set_defaults(handler=run_init)


def run_init(args: argparse.Namespace) -> int:
    """Run ``qsign softhsm init`` and print its report; return the exit code."""
    state_dir = resolve_state_dir(args.state_dir)
    report = init_state(state_dir)

    if args.json:
        print(json.dumps(report_json(report), ensure_ascii=False, indent=2))
    else:
        print(format_report(report, args.language), end="")
    return 0
