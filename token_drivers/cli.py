"""``qsign tokens``: list the slots, tokens, keys and certificates of a PKCS#11 module."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from qsign.config import apply_environment, load_config, resolve_state_dir
from qsign.i18n import translate
from token_drivers.errors import pkcs11_errors
from token_drivers.inventory import list_slots, list_token_keys
from token_drivers.keys import _login
from token_drivers.module import load_module
from token_drivers.pcsc import apply_pcsc_environment
from token_drivers.pin import read_pin

__all__ = ["register", "collect_tokens"]

_logger = logging.getLogger(__name__)


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "tokens", parents=[common],
        help="list PKCS#11 tokens, keys and certificates",
        description="List the slots and tokens of a PKCS#11 module and, per token, its keys paired "
                    "with their certificates (by CKA_ID, else by public key).")
    parser.add_argument("--module", metavar="PATH",
                        help="PKCS#11 module to load (default: [pkcs11] module of the state dir's qsign.toml)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of tokens")
    parser.add_argument("--login", metavar="TOKEN",
                        help="log in to the token with this label to list its private keys; the PIN comes "
                             "from QSIGN_PIN, --pin-file or a prompt")
    parser.add_argument("--pin-file", metavar="FILE", help="file whose first line is the PIN for --login")
    parser.add_argument("--watch", action="store_true",
                        help="print PC/SC reader and card events as they happen, until Ctrl+C")
    parser.add_argument("--watch-seconds", type=float, metavar="SECONDS",
                        help="with --watch, stop after this many seconds")
    parser.set_defaults(handler=run_tokens)


def collect_tokens(module_path: str, login_label: str | None = None, pin: str | None = None) -> list[dict[str, Any]]:
    """Return the tokens of a module as the dicts ``qsign tokens --json`` prints."""
    module = load_module(module_path)
    result = []
    for slot in list_slots(module):
        if slot.token is None:
            continue
        token_entry = {"slot": slot.slot_id, "slot_description": slot.description, "module": module_path}
        token_entry.update(slot.token.to_dict())
        token_entry["initialized"] = "TOKEN_INITIALIZED" in slot.token.flags
        if not token_entry["initialized"]:
            token_entry.update(logged_in=False, keys=[], certificates_without_key=[])
            result.append(token_entry)
            continue

        with module.lock:
            # By slot, not by serial: two cards of one series can share a serial (libcacard's do).
            token = next(s for s in module.lib.get_slots(token_present=True) if s.slot_id == slot.slot_id).get_token()
            logged_in = login_label is not None and slot.token.label == login_label
            with pkcs11_errors(token=slot.token.label):
                session = token.open(rw=False)
            try:
                if logged_in:
                    with pkcs11_errors(token=slot.token.label):
                        _login(module, session, pin or "", slot.token.label)
                keys, certificates = list_token_keys(session, logged_in=logged_in)
            finally:
                with pkcs11_errors(token=slot.token.label):
                    session.close()

        paired = {key.certificate.sha256 for key in keys if key.certificate is not None}
        token_entry["logged_in"] = logged_in
        token_entry["keys"] = [key.to_dict() for key in keys]
        token_entry["certificates_without_key"] = [c.to_dict() for c in certificates if c.sha256 not in paired]
        result.append(token_entry)
    return result


def _print_table(tokens: list[dict[str, Any]], language: str) -> None:
    if not tokens:
        print(translate("No token is present.", language))
        return
    for token in tokens:
        if not token["initialized"]:
            print(translate("Slot {slot}: token not initialized", language, slot=token["slot"]))
            continue
        print(translate("Token {label} (serial {serial}, slot {slot}, {manufacturer} {model})", language,
                        label=token["label"], serial=token["serial"], slot=token["slot"],
                        manufacturer=token["manufacturer"], model=token["model"]))
        if not token["logged_in"]:
            print("  " + translate("Private keys are listed only after a login (--login LABEL).", language))
        for key in token["keys"]:
            size = f"{key['bits']} bits" if key["bits"] else (key["curve"] or "?")
            always = translate(" [PIN for every signature]", language) if key["always_authenticate"] else ""
            print(f"  - {key['label']} (CKA_ID {key['id'] or '-'}, {key['type'].upper()} {size}){always}")
            certificate = key["certificate"]
            if certificate is None:
                print("      " + translate("no certificate", language))
            else:
                print("      " + translate("certificate: {subject}, issued by {issuer}, valid until {not_after}",
                                           language, **certificate))


def run_tokens(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args.state_dir)
    config = load_config(state_dir)
    apply_environment(config)
    apply_pcsc_environment(config)
    if args.watch:
        from token_drivers.watch import watch_events

        return watch_events(config, args.language, as_json=args.json, duration=args.watch_seconds)

    module_path = args.module or config.default_module
    if not module_path:
        from qsign.errors import ConfigError
        raise ConfigError(detail="no --module given and no [pkcs11] module in " + str(config.path))

    pin = read_pin(args.pin_file, prompt_language=args.language) if args.login else None
    tokens = collect_tokens(module_path, args.login, pin)

    if args.json:
        print(json.dumps(tokens, ensure_ascii=False, indent=2))
    else:
        _print_table(tokens, args.language)
    return 0
