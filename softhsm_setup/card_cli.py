"""``qsign softhsm card up|tap|remove|down``: the virtual smart-card rig as a command."""

from __future__ import annotations

import argparse
import json
from typing import Any

from qsign.config import resolve_state_dir
from qsign.i18n import N_, translate
from softhsm_setup.card_rig import CARD_PIN, CARDS, DEFAULT_NAMESPACE, READER_COUNT, CardRig, Step

__all__ = ["register_card"]

_STEP_TEXT = {
    Step.CREATED: N_("created"),
    Step.EXISTS: N_("already there"),
    Step.STARTED: N_("started"),
    Step.RUNNING: N_("already running"),
    Step.STOPPED: N_("stopped"),
    Step.NOT_RUNNING: N_("was not running"),
    Step.DELETED: N_("deleted"),
}

_CARD_DESCRIPTION = (
    "A virtual smart card for trying qsign without hardware: pcscd with the vpcd reader driver runs in "
    "a private network namespace (root only), and libcacard CAC cards with keys issued by the state "
    "dir's test CA connect to its two readers. After \"card up\" and \"card tap\", "
    "\"qsign tokens --module opensc-pkcs11.so\" lists the card through OpenSC."
)


def register_card(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``card`` with its four subcommands under ``qsign softhsm``."""
    card = commands.add_parser("card", help="virtual smart card over PC/SC (pcscd, vpcd, libcacard)",
                               description=_CARD_DESCRIPTION)
    actions = card.add_subparsers(dest="card_command", metavar="ACTION", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, parents=[common], help=help_text, description=help_text)
        parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                            help=f"network namespace of pcscd (default {DEFAULT_NAMESPACE})")
        parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
        parser.set_defaults(handler=run_card, card_action=name)
        return parser

    add("up", "make the virtual cards, the network namespace and pcscd")
    tap = add("tap", "connect a virtual card to a reader, as a tap on a phone or a card put in a reader")
    tap.add_argument("--card", choices=sorted(CARDS), default="officer", help="which card (default officer)")
    tap.add_argument("--reader", type=int, choices=range(READER_COUNT), default=0, help="reader number (default 0)")
    remove = add("remove", "take the card off a reader")
    remove.add_argument("--reader", type=int, choices=range(READER_COUNT), default=0, help="reader number (default 0)")
    add("down", "remove every card, stop pcscd and delete the network namespace")


def _step_label(what: str, language: str) -> str:
    kind, _, name = what.partition(" ")
    if kind == "card":
        return translate("card {name}", language, name=name)
    if kind == "bridge":
        return translate("card on reader {reader}", language, reader=CardRig.reader_name(int(name)))
    if kind == "namespace":
        return translate("network namespace", language)
    return what


def _print_steps(steps: dict[str, Step], language: str) -> None:
    for what, step in steps.items():
        print(translate("{what}: {result}", language, what=_step_label(what, language),
                        result=translate(_STEP_TEXT[step], language)))


def run_card(args: argparse.Namespace) -> int:
    """Run one ``qsign softhsm card`` action and print what it did; return the exit code."""
    rig = CardRig(resolve_state_dir(args.state_dir), namespace=args.namespace)
    language = args.language
    result: dict[str, Any] = {"action": args.card_action}

    if args.card_action == "up":
        steps = rig.up()
        result.update(steps={k: v.value for k, v in steps.items()}, socket=str(rig.socket_path),
                      readers=[rig.reader_name(n) for n in range(READER_COUNT)], pin_file=str(rig.pin_file))
        if not args.json:
            _print_steps(steps, language)
            print(translate("pcscd socket: {socket} (qsign.toml [pcsc] socket; other programs need "
                            "PCSCLITE_CSOCK_NAME={socket})", language, socket=rig.socket_path))
            print(translate("Card PIN (test only): {pin}, also in {pin_file}", language, pin=CARD_PIN,
                            pin_file=rig.pin_file))
    elif args.card_action == "tap":
        step = rig.tap(args.card, args.reader)
        result.update(card=args.card, reader=rig.reader_name(args.reader), result=step.value)
        if not args.json:
            message = (N_("Card {card} ({holder}) is on reader {reader}.") if step is Step.STARTED
                       else N_("Reader {reader} already has a card; remove it first."))
            print(translate(message, language, card=args.card, holder=CARDS[args.card].common_name,
                            reader=rig.reader_name(args.reader)))
    elif args.card_action == "remove":
        step = rig.remove(args.reader)
        result.update(reader=rig.reader_name(args.reader), result=step.value)
        if not args.json:
            message = (N_("The card was taken off reader {reader}.") if step is Step.STOPPED
                       else N_("Reader {reader} had no card."))
            print(translate(message, language, reader=rig.reader_name(args.reader)))
    else:
        steps = rig.down()
        result.update(steps={k: v.value for k, v in steps.items()})
        if not args.json:
            _print_steps(steps, language)

    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0
