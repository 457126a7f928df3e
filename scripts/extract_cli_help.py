#!/usr/bin/env python3
"""List every help text of the ``qsign`` command line, to check the catalogs against it.

Development tool only; the ``qsign`` command never imports it. It builds the full parser, walks every
subcommand and prints each help, description and group title with the command it belongs to.
With ``--missing zh_CN`` it prints only the texts that have no translation in that language and exits
with status 1 if there are any. With ``--po`` it prints the texts as empty ``.po`` entries.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from qsign.cli import build_parser
from qsign.i18n import gettext_for

#: argparse's own texts that ``qsign.cli.LocalizedHelpFormatter`` translates (Python 3.11 spelling).
ARGPARSE_TEXTS = ("usage: ", "options", "positional arguments", "show this help message and exit")


@dataclass(frozen=True)
class HelpText:
    """One translatable text of the command line."""

    command: str
    """The command it belongs to, such as ``qsign sign``."""
    kind: str
    """``description``, ``group``, ``help`` (of an option or positional) or ``command`` (a subcommand's help)."""
    text: str


def iter_help_texts(parser: argparse.ArgumentParser) -> Iterator[HelpText]:
    """Yield the description, group titles and option help of ``parser`` and of its subcommands.

    argparse has no public API to list a parser's actions and subparsers, so this reads its private
    ``_actions``, ``_action_groups`` and ``_choices_actions`` attributes (as Python 3.11 names them).
    """
    command = parser.prog
    if parser.description:
        yield HelpText(command, "description", parser.description)

    for group in parser._action_groups:
        if group.title:
            yield HelpText(command, "group", group.title)
        if group.description:
            yield HelpText(command, "description", group.description)

    for action in parser._actions:
        if action.help and action.help != argparse.SUPPRESS:
            yield HelpText(command, "help", action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice_action in action._choices_actions:
                if choice_action.help and choice_action.help != argparse.SUPPRESS:
                    yield HelpText(command, "command", choice_action.help)
            for subparser in dict.fromkeys(action.choices.values()):
                yield from iter_help_texts(subparser)


def unique_texts(parser: argparse.ArgumentParser) -> list[str]:
    """Return each distinct help text of the command line once, argparse's own texts included."""
    texts = dict.fromkeys(ARGPARSE_TEXTS)
    texts.update(dict.fromkeys(help_text.text for help_text in iter_help_texts(parser)))
    return list(texts)


def _po_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def main() -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--missing", metavar="LANGUAGE", help="print only texts without a translation")
    options.add_argument("--po", action="store_true", help="print the texts as empty .po entries")
    arguments = options.parse_args()

    parser = build_parser("en")
    if arguments.missing:
        translate = gettext_for(arguments.missing)
        missing = [text for text in unique_texts(parser) if translate(text) == text]
        for text in missing:
            print(text)
        return 1 if missing else 0

    if arguments.po:
        for text in unique_texts(parser):
            print(f"msgid {_po_string(text)}\nmsgstr \"\"\n")
        return 0

    for help_text in iter_help_texts(parser):
        print(f"{help_text.command}\t{help_text.kind}\t{help_text.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
