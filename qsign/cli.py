"""The ``qsign`` console command: registers each package's subcommands and runs one.

Each package owns its subcommand in its own ``cli`` module, which provides
``register(subparsers, common)``; ``common`` is a parent parser with the options every command takes.
A handler receives the parsed arguments and returns the exit code. A ``QsignError`` ends the command
with its localized message and its ``exit_code``; the traceback is shown only with ``--verbose``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence

from qsign import __version__
from qsign.config import load_config, resolve_state_dir
from qsign.errors import QsignError
from qsign.i18n import language_from_environment, translate
from qsign.logs import configure_logging

__all__ = ["main", "build_parser"]

_logger = logging.getLogger(__name__)

#: Modules whose ``register`` adds a subcommand, in the order ``qsign --help`` lists them.
SUBCOMMAND_MODULES = (
    "softhsm_setup.cli",
    "token_drivers.cli",
    "signing.cli",
    "verify_service.cli",
    "archive.cli",
    "hsm.cli",
    "agent.cli",
    "agent.web.cli",
    "qsign.demo",
)


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", metavar="DIR",
                        help="state directory (default: $QSIGN_STATE_DIR, else ~/.local/share/qsign)")
    common.add_argument("--lang", choices=("zh_CN", "en"),
                        help="language of messages (default: QSIGN_LANG, the config, then LANG)")
    common.add_argument("--verbose", "-v", action="store_true", help="log debug lines and show tracebacks")
    common.add_argument("--log-json", action="store_true", help="write log lines as JSON objects")
    return common


def build_parser() -> argparse.ArgumentParser:
    """Build the ``qsign`` parser with every registered subcommand."""
    common = _common_options()
    parser = argparse.ArgumentParser(prog="qsign", description="qsign: PKCS#11 signing and verification")
    parser.add_argument("--version", action="version", version=f"qsign {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # NOTE: a package whose CLI module is not written yet is skipped, so the others stay usable.
            if error.name != module_name:
                raise
            _logger.debug("subcommand module %s is not installed", module_name)
            continue
        module.register(subparsers, common)
    return parser


def _configured_language(args: argparse.Namespace) -> str | None:
    """Return ``[general] language`` of the state dir's config, if that file exists."""
    state_dir = getattr(args, "state_dir", None)
    config = load_config(resolve_state_dir(state_dir))
    return config.language


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``qsign`` command and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.language = language_from_environment(args.lang)
    configure_logging(verbose=args.verbose, json_lines=args.log_json)

    try:
        args.language = language_from_environment(args.lang, _configured_language(args))
        return int(args.handler(args) or 0)
    except QsignError as error:
        _logger.debug("command failed", exc_info=True)
        if getattr(args, "json", False):
            print(json.dumps({"error": error.to_dict(args.language)}, ensure_ascii=False))
        else:
            label = translate("Error", args.language)
            print(f"{label} [{error.code}]: {error.message(args.language)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(translate("Interrupted.", args.language), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
