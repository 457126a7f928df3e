"""``qsign sign``: sign one file with a token key, as PAdES (PDF) or detached CAdES (any file).

The PIN never comes from the command line. The first of these sources that gives one is used:
``--pin-file``, the ``QSIGN_PIN`` variable, the profile's ``pin_env`` and ``pin_file``, and a prompt
when stdin is a terminal. With none of them the command fails with ``pin_required``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from qsign.config import Config, TokenProfile, apply_environment, load_config, resolve_state_dir
from qsign.errors import ConfigError
from qsign.i18n import N_, translate
from signing.appearance import DEFAULT_SEAL_IMAGE, VisibleSignature, parse_rect
from signing.cades import sign_detached
from signing.errors import OptionNotApplicable, PinFileUnreadable
from signing.files import check_input_file, is_pdf
from signing.levels import Level, cades_settings_for_level, pades_options_for_level
from signing.pades import PadesOptions, sign_pdf
from signing.pkcs11_signer import ALLOWED_DIGESTS, TokenSigner, load_chain
from signing.result import SignResult
from token_drivers.errors import PinRequired
from token_drivers.keys import TokenKey, open_key
from token_drivers.pin import PIN_ENV, read_pin

__all__ = ["register", "run_sign", "resolve_pin"]

_logger = logging.getLogger(__name__)

SUMMARY = N_("Signed {input} as {format} with key {key} ({mechanism}, {digest}) of {signer}: {output}")


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "sign", parents=[common],
        help="sign a file with a token key (PAdES for PDF, detached CAdES otherwise)",
        description="Sign FILE with a key on a PKCS#11 token and write the signed PDF or the .p7s "
                    "signature to OUT. The PIN comes from --pin-file, QSIGN_PIN, the profile, or a prompt.")
    parser.add_argument("file", metavar="FILE", help="file to sign")
    parser.add_argument("-o", "--output", metavar="OUT", required=True,
                        help="output path: the signed PDF (pades) or the DER .p7s signature (cades)")

    key_source = parser.add_argument_group("key (a profile, or a token and key label)")
    key_source.add_argument("--profile", metavar="NAME", help="[tokens.NAME] profile of the state dir's qsign.toml")
    key_source.add_argument("--token", metavar="LABEL", help="token label")
    key_source.add_argument("--key", metavar="LABEL", help="private key label (CKA_LABEL)")
    key_source.add_argument("--module", metavar="PATH",
                            help="PKCS#11 module for --token (default: [pkcs11] module of qsign.toml)")
    key_source.add_argument("--pin-file", metavar="FILE", help="file whose first line is the PIN")
    key_source.add_argument("--final-try", action="store_true",
                            help="try the PIN even when the token allows only one more attempt")

    signature = parser.add_argument_group("signature")
    signature.add_argument("--format", choices=("pades", "cades"),
                           help="pades (signed PDF) or cades (detached .p7s); default: pades for a PDF, else cades")
    signature.add_argument("--digest", choices=sorted(ALLOWED_DIGESTS),
                           help="digest algorithm (default: sha384 for P-384 keys, else sha256)")
    signature.add_argument("--pss", action="store_true", help="RSA keys: sign with RSASSA-PSS instead of PKCS#1 v1.5")
    signature.add_argument("--level", choices=[level.value for level in Level], default=Level.B_B.value,
                           help="B-T adds a signature timestamp from the [tsa] TSA; B-LT also embeds OCSP "
                                "responses and CRLs; B-LTA adds a document timestamp (CAdES: B-B and B-T; "
                                "default: B-B)")
    signature.add_argument("--check-revocation", action="store_true",
                           help="check the signer's certificate for revocation (OCSP or CRL) before a B-B or "
                                "B-T signature too, as [signing] check_revocation = true does; B-LT and B-LTA "
                                "always check")
    signature.add_argument("--reason", metavar="TEXT", help="reason for signing, stored in the PDF signature")
    signature.add_argument("--location", metavar="TEXT", help="place of signing, stored in the PDF signature")
    signature.add_argument("--contact", metavar="TEXT", help="signer's contact information, stored in the PDF")

    appearance = parser.add_argument_group("visible signature (PDF only)")
    appearance.add_argument("--visible", action="store_true", help="add a visible seal (default: invisible)")
    appearance.add_argument("--page", type=int, default=1,
                            help="page of the seal, 1-based; -1 is the last page (default: 1)")
    appearance.add_argument("--rect", metavar="X1,Y1,X2,Y2", default="400,40,560,200",
                            help="seal rectangle in PDF points from the lower-left corner (default: 400,40,560,200)")
    appearance.add_argument("--seal-image", metavar="PNG", help=f"seal image (default: {DEFAULT_SEAL_IMAGE.name})")
    parser.add_argument("--json", action="store_true", help="print the result (or the error) as a JSON object")
    parser.set_defaults(handler=run_sign)


def resolve_pin(pin_file: str | None, profile: TokenProfile | None, language: str) -> str:
    """Return the PIN from ``pin_file``, ``QSIGN_PIN``, the profile's sources, or a terminal prompt.

    Raises ``PinRequired`` when none gives a PIN and ``PinFileUnreadable`` for a file that cannot be read.
    """
    if pin_file is not None:
        return _read_pin_file(Path(pin_file))
    if os.environ.get(PIN_ENV):
        return os.environ[PIN_ENV]
    if profile is not None:
        if profile.pin_env and os.environ.get(profile.pin_env):
            return os.environ[profile.pin_env]
        if profile.pin_file is not None:
            return _read_pin_file(profile.pin_file)
    return read_pin(None, prompt_language=language)


def _read_pin_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise PinFileUnreadable(path=str(path), reason=reason, ids={"path": str(path)}) from error
    pin = text.splitlines()[0] if text else ""
    if not pin:
        raise PinRequired()
    return pin


def _key_location(args: argparse.Namespace, config: Config) -> tuple[str, str, str, TokenProfile | None]:
    """Return (module, token label, key label, profile) from --profile or --token/--key."""
    if args.profile:
        if args.token or args.key:
            raise ConfigError(detail="give either --profile or --token and --key, not both")
        profile = config.tokens.get(args.profile)
        if profile is None:
            raise ConfigError(detail=f"no [tokens.{args.profile}] profile in {config.path}")
        return args.module or profile.module, profile.token_label, profile.key_label, profile

    if not (args.token and args.key):
        raise ConfigError(detail="give --profile NAME, or --token LABEL and --key LABEL")
    module = args.module or config.default_module
    if not module:
        raise ConfigError(detail=f"no --module given and no [pkcs11] module in {config.path}")
    return module, args.token, args.key, None


def _choose_format(args: argparse.Namespace, input_path: Path) -> str:
    if args.format:
        return args.format
    check_input_file(input_path)
    return "pades" if input_path.suffix.lower() == ".pdf" or is_pdf(input_path) else "cades"


def _reject_pdf_options(args: argparse.Namespace) -> None:
    pdf_only = {"--visible": args.visible, "--seal-image": args.seal_image, "--reason": args.reason,
                "--location": args.location, "--contact": args.contact}
    for option, value in pdf_only.items():
        if value:
            raise OptionNotApplicable(option=option, format="cades")


def run_sign(args: argparse.Namespace) -> int:
    """Handle ``qsign sign``: open the key, sign, print the output path and a summary."""
    state_dir = resolve_state_dir(args.state_dir)
    config = load_config(state_dir)
    apply_environment(config)

    input_path = Path(args.file)
    output_path = Path(args.output)
    signature_format = _choose_format(args, input_path)
    module, token_label, key_label, profile = _key_location(args, config)

    options = None
    cades_settings = None
    if signature_format == "cades":
        _reject_pdf_options(args)
        cades_settings = cades_settings_for_level(args.level, config, check_revocation=args.check_revocation)
    else:
        visible = None
        if args.visible:
            seal = Path(args.seal_image) if args.seal_image else DEFAULT_SEAL_IMAGE
            visible = VisibleSignature(page=args.page, rect=parse_rect(args.rect), seal_image=seal,
                                       language=args.language)
        options = PadesOptions(reason=args.reason, location=args.location, contact_info=args.contact,
                               visible=visible)
        options = pades_options_for_level(args.level, config, options, check_revocation=args.check_revocation)
    chain = load_chain(config)

    pin = resolve_pin(args.pin_file, profile, args.language)
    key: TokenKey = open_key(module, pin=pin, token_label=token_label, key_label=key_label,
                             allow_final_try=args.final_try)
    with key:
        signer = TokenSigner(key, chain=chain, digest_algorithm=args.digest, pss=args.pss)
        if signature_format == "pades":
            result = sign_pdf(signer, input_path, output_path, options)
        else:
            result = sign_detached(signer, input_path, output_path, timestamper=cades_settings.timestamper,
                                   validation_context=cades_settings.validation_context)

    _print_result(args, input_path, key_label, result)
    return 0


def _print_result(args: argparse.Namespace, input_path: Path, key_label: str, result: SignResult) -> None:
    if args.json:
        print(json.dumps({"input": str(input_path), "key": key_label, **result.to_dict()}, ensure_ascii=False))
        return
    print(result.output)
    print(translate(SUMMARY, args.language, input=input_path, format=result.format.upper(), key=key_label,
                    mechanism=result.mechanism, digest=result.digest_algorithm, signer=result.signer,
                    output=result.output))
