"""The ``qsign`` console command: registers each package's subcommands and runs one.

Each package owns its subcommand in its own ``cli`` module, which provides
``register(subparsers, common)``; ``common`` is a parent parser with the options every command takes.
A handler receives the parsed arguments and returns the exit code. A ``QsignError`` ends the command
with its localized message and its ``exit_code``; the traceback is shown only with ``--verbose``.

Help text is written as plain English in ``register`` and translated when ``--help`` is formatted, so
the catalogs hold each text once and a package needs no gettext call at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import logging
import re
import sys
import unicodedata
from collections.abc import Iterator, Sequence

from qsign import __version__
from qsign.config import load_config, resolve_state_dir
from qsign.errors import QsignError
from qsign.i18n import gettext_for, language_from_environment, translate
from qsign.logs import configure_logging

__all__ = ["main", "build_parser", "LocalizedHelpFormatter", "requested_language"]

_logger = logging.getLogger(__name__)

_WIDE = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff01-\uff60"  # CJK blocks and full-width forms
# The units Chinese help text is wrapped by: a wide character together with the punctuation that must
# not start a line, a run of other non-space characters, or whitespace.
_WRAP_UNIT = re.compile(f"[{_WIDE}][，。；：、！？）》」』]*|[^\\s{_WIDE}]+|\\s+")

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


def _add_common_options(common: argparse.ArgumentParser) -> None:
    common.add_argument("--state-dir", metavar="DIR",
                        help="state directory (default: $QSIGN_STATE_DIR, else ~/.local/share/qsign)")
    common.add_argument("--lang", choices=("zh_CN", "en"),
                        help="language of messages (default: QSIGN_LANG, the config, then LANG)")
    common.add_argument("--verbose", "-v", action="store_true", help="log debug lines and show tracebacks")
    common.add_argument("--log-json", action="store_true", help="write log lines as JSON objects")


class LocalizedHelpFormatter(argparse.HelpFormatter):
    """Help formatter that translates help, descriptions, section titles and ``usage:`` into ``language``.

    The English texts are the message ids; argparse's own texts ("usage: ", "options",
    "show this help message and exit") are looked up in the same catalogs.
    """

    def __init__(self, prog: str, *, language: str, **kwargs: object) -> None:
        super().__init__(prog, **kwargs)
        self._gettext = gettext_for(language)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # argparse fills %(default)s and the like after this call, so the translation keeps those keys.
        help_text = super()._get_help_string(action)
        if not help_text or help_text == argparse.SUPPRESS:
            return help_text
        return self._gettext(help_text)

    def add_text(self, text: str | None) -> None:
        if text and text != argparse.SUPPRESS:
            text = self._gettext(text)
        super().add_text(text)

    def start_section(self, heading: str | None) -> None:
        super().start_section(self._gettext(heading) if heading else heading)

    def add_usage(self, usage, actions, groups, prefix: str | None = None) -> None:
        # NOTE: argparse measures the prefix in characters, so a translated "usage: " of wide
        # characters makes the first usage lines a few columns wider than the terminal width.
        if prefix is None:
            prefix = self._gettext("usage: ")
        super().add_usage(usage, actions, groups, prefix)

    def _split_lines(self, text: str, width: int) -> list[str]:
        if not _has_wide_characters(text):
            return super()._split_lines(text, width)
        return _wrap_wide_text(" ".join(text.split()), width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if not _has_wide_characters(text):
            return super()._fill_text(text, width, indent)
        lines = _wrap_wide_text(" ".join(text.split()), width - len(indent))
        return "\n".join(indent + line for line in lines)


def _display_width(text: str) -> int:
    """Return the terminal columns ``text`` takes: two for each wide or full-width character."""
    return sum(2 if unicodedata.east_asian_width(character) in "WF" else 1 for character in text)


def _has_wide_characters(text: str) -> bool:
    return any(unicodedata.east_asian_width(character) in "WF" for character in text)


def _wrap_wide_text(text: str, width: int) -> list[str]:
    """Wrap text that mixes Chinese and ASCII into lines of at most ``width`` terminal columns.

    Lines break between wide characters or at spaces, never inside an ASCII word; a word longer
    than ``width`` gets a line of its own. ``textwrap`` breaks only at spaces and counts a wide
    character as one column, which is why argparse's own wrapping does not fit Chinese text.
    """
    lines: list[str] = []
    line = ""
    for unit in _WRAP_UNIT.findall(text):
        if unit.isspace():
            line += " " if line else ""
            continue
        if line and _display_width(line + unit) > width:
            lines.append(line.rstrip())
            line = unit
        else:
            line += unit
    if line:
        lines.append(line.rstrip())
    return lines


def _localized_parser_class(language: str) -> type[argparse.ArgumentParser]:
    """Return an ``ArgumentParser`` subclass whose help is formatted in ``language``.

    ``add_subparsers`` creates nested parsers from ``type(parent)``, so every subcommand at every
    depth gets the same formatter unless its package passes its own ``formatter_class``.
    """
    formatter = functools.partial(LocalizedHelpFormatter, language=language)

    class LocalizedArgumentParser(argparse.ArgumentParser):
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs.setdefault("formatter_class", formatter)
            super().__init__(*args, **kwargs)

        def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
            with argparse_messages(language):
                return super().parse_known_args(args, namespace)

        def parse_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
            # parse_args reports "unrecognized arguments" after parse_known_args has returned.
            with argparse_messages(language):
                return super().parse_args(args, namespace)

    return LocalizedArgumentParser


@contextlib.contextmanager
def argparse_messages(language: str) -> Iterator[None]:
    """Make argparse's own messages (``invalid choice``, ``the following arguments are required`` …)
    come from the qsign catalogs in ``language`` while the block runs.

    argparse looks its texts up through its module globals ``_`` and ``ngettext`` at the moment it
    builds a message (Python 3.11), so replacing them for the duration of a parse translates its errors.
    """
    translate_text = gettext_for(language)

    def translate_plural(singular: str, plural: str, count: int) -> str:
        return translate_text(singular if count == 1 else plural)

    saved = argparse._, argparse.ngettext  # type: ignore[attr-defined]
    argparse._, argparse.ngettext = translate_text, translate_plural  # type: ignore[attr-defined]
    try:
        yield
    finally:
        argparse._, argparse.ngettext = saved  # type: ignore[attr-defined]


def requested_language(argv: Sequence[str]) -> str:
    """Return the language of the command line before parsing: ``--lang`` if given, else the environment's.

    The config file is not read here, because its path depends on ``--state-dir``; the handler's
    ``args.language`` also considers ``[general] language``.
    """
    explicit = None
    for position, argument in enumerate(argv):
        if argument == "--":
            break
        if argument == "--lang" and position + 1 < len(argv):
            explicit = argv[position + 1]
        elif argument.startswith("--lang="):
            explicit = argument.partition("=")[2]
    return language_from_environment(explicit)


def build_parser(language: str | None = None) -> argparse.ArgumentParser:
    """Build the ``qsign`` parser with every registered subcommand, showing help in ``language``.

    Without ``language``, help is shown in the language of ``QSIGN_LANG``, ``LC_ALL`` or ``LANG``.
    """
    if language is None:
        language = language_from_environment()
    parser_class = _localized_parser_class(language)
    common = parser_class(add_help=False)
    _add_common_options(common)
    parser = parser_class(prog="qsign", description="qsign: PKCS#11 signing and verification")
    parser.add_argument("--version", action="version", version=f"qsign {__version__}")
    # A separate dest, because a subcommand's own --lang default (None) would overwrite this value.
    parser.add_argument("--lang", dest="root_lang", choices=("zh_CN", "en"),
                        help="language of messages (default: QSIGN_LANG, the config, then LANG)")
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
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(requested_language(argv))
    args = parser.parse_args(argv)
    args.lang = args.lang or args.root_lang
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
