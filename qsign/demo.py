"""``qsign demo``: the main job from nothing, on the embedded default.

The demo sets up the SoftHSM2 tokens, the test PKI and the demo policy, then runs the officer
signature through the agent (``qsign.demo_phone``): the agent starts on 127.0.0.1 with TLS, phones pair
with it, a request with a real Chinese PDF is approved and signed with the officer token, and the signed
file is downloaded. The demo then seals the result with the HSM key as a second signature, starts the
verification service on 127.0.0.1, has it verify the file over HTTP, and prints a summary in Chinese
and English.
Like ``qsign.cli``, this module imports the other packages: it orchestrates them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from qsign.config import CONFIG_NAME, apply_environment, load_config, resolve_state_dir, write_config
from qsign.errors import InvalidInput
from qsign.i18n import N_, translate

__all__ = ["register", "run_demo", "DEFAULT_DEMO_PDF"]

_logger = logging.getLogger(__name__)

#: The real PDF the demo signs: one page of Chinese text made by XeTeX (provenance in SOURCES.md).
DEFAULT_DEMO_PDF = Path(__file__).resolve().parent.parent / "tests" / "data" / "real" / "xiaoshan-sample.pdf"


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo", parents=[common],
        help="run the main job on the embedded default (SoftHSM2 tokens, a real PDF)",
        description="Set up SoftHSM2 tokens and a test PKI, sign a real PDF with the officer key through the "
                    "agent (paired phones over TLS on 127.0.0.1), seal it with the HSM key, then verify it "
                    "through the verification service on 127.0.0.1.")
    parser.add_argument("--input", metavar="PDF", type=Path, default=DEFAULT_DEMO_PDF,
                        help="PDF to sign (default: the Chinese sample in tests/data/real)")
    parser.add_argument("--json", action="store_true", help="print the verification report as JSON at the end")
    parser.set_defaults(handler=run_demo)


@dataclass
class _Printer:
    """Prints each step in both languages, Chinese first."""

    def step(self, message: str, **params: Any) -> None:
        print(f"» {translate(message, 'zh_CN', **params)}")
        print(f"  {translate(message, 'en', **params)}", flush=True)

    def path(self, path: Path) -> None:
        print(f"  {path}", flush=True)


async def _verify_over_http(state_dir: Path, signed: Path) -> tuple[str, dict[str, Any]]:
    from verify_service.server import start_server
    from verify_service.settings import service_settings
    from verify_service.trust import trust_from_config

    config = load_config(state_dir)
    # The test certificates name OCSP and CRL URLs of the test PKI on 127.0.0.1; the service fetches
    # revocation data from there, which "trusted" requires.
    settings = service_settings(config, trust_from_config(config, online=True))
    runner, base_url = await start_server(settings, "127.0.0.1", 0)
    try:
        form = aiohttp.FormData()
        form.add_field("file", signed.read_bytes(), filename=signed.name, content_type="application/pdf")
        async with aiohttp.ClientSession() as client:
            async with client.post(f"{base_url}/api/v1/verify", data=form,
                                   headers={"Accept-Language": "zh-CN"}) as response:
                body = await response.json()
                if response.status != 200:
                    raise InvalidInput(N_("The verification service returned HTTP {status}: {code}"),
                                       status=response.status, code=body.get("code", "?"))
                return base_url, body
    finally:
        await runner.cleanup()


def _sign(config: Any, profile: str, source: Path, target: Path, options: Any) -> Any:
    from signing.pades import sign_pdf
    from signing.pkcs11_signer import TokenSigner, load_chain
    from token_drivers.keys import open_profile_key

    with open_profile_key(config, profile) as key:
        signer = TokenSigner(key, chain=load_chain(config))
        return sign_pdf(signer, source, target, options)


def _start_test_pki(state_dir: Path) -> Any:
    """Start the test PKI's OCSP, CRL and TSA server at the ``[pki] base_url`` of the state dir."""
    from softhsm_setup.ltv_pki import DEFAULT_PKI_BASE_URL, PkiUrls
    from softhsm_setup.pki_server import PkiServer

    urls = PkiUrls.parse(load_config(state_dir).section("pki").get("base_url") or DEFAULT_PKI_BASE_URL)
    return PkiServer(state_dir, "127.0.0.1", urls.port).start()


def _first_signer(path: Path) -> str:
    """Return the common name of the first signature's signer in the PDF at ``path``."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    from signing.result import signer_common_name

    with path.open("rb") as handle:
        signature = PdfFileReader(handle).embedded_signatures[0]
        return signer_common_name(signature.signer_cert)


#: Tables the demo adds to ``qsign.toml`` so that the archive encrypts stored files: an AES key-encryption
#: key on the HSM token (made on first use, never extractable) and audit checkpoints signed by the seal key.
DEMO_ARCHIVE_CONFIG = {
    "tokens": {"archive_kek": {"token": "qsign-hsm", "key": "archive-kek", "pin_file": "secrets/hsm.pin"}},
    "archive": {"encryption": "pkcs11", "kek_profile": "archive_kek", "kek_create": True,
                "checkpoint_profile": "seal", "checkpoint_every": 100},
}


def _enable_archive_encryption(state_dir: Path) -> bool:
    """Add ``DEMO_ARCHIVE_CONFIG`` to the state dir's config unless it has an ``[archive]`` table.

    Returns whether the file changed; an existing ``[archive]`` table is left as the user set it.
    """
    config = load_config(state_dir)
    if "archive" in config.raw:
        return False

    raw = dict(config.raw)
    raw["tokens"] = {**raw.get("tokens", {}), **DEMO_ARCHIVE_CONFIG["tokens"]}
    raw["archive"] = DEMO_ARCHIVE_CONFIG["archive"]
    write_config(config.path, raw)
    return True


def _archive_sealed(state_dir: Path, config: Any, sealed: Path, phone: Any) -> None:
    """Store the sealed file in the archive and record the seal in the audit log."""
    from archive.api import Archive, DocumentKind

    with Archive.open(state_dir, config) as archive:
        record = archive.store_document(sealed, DocumentKind.SIGNED, media_type="application/pdf")
        archive.audit("demo", "document.sealed", object_ids={"request": phone.request_id, "profile": "seal"},
                      document_hashes=[record.sha256])


def run_demo(args: argparse.Namespace) -> int:
    from qsign.demo_phone import run_phone_flow
    from signing.levels import pades_options_for_level
    from signing.pades import PadesOptions
    from softhsm_setup import init_state

    out = _Printer()
    state_dir = resolve_state_dir(args.state_dir)
    source = Path(args.input)
    if not source.is_file():
        raise InvalidInput(N_("The demo PDF {path} does not exist. Pass a PDF with --input."), path=str(source))

    out.step(N_("Setting up SoftHSM2 tokens and the test PKI in {path}"), path=str(state_dir))
    report = init_state(state_dir)
    for written in report.files_written:
        out.path(Path(written))
    out.step(N_("Test PINs are in {path}; they are for tests only."), path=str(state_dir / "secrets"))

    if _enable_archive_encryption(state_dir):
        out.step(N_("Turned on encryption at rest for the archive, with its key on the HSM token"))
        out.path(state_dir / CONFIG_NAME)

    config = load_config(state_dir)
    apply_environment(config)
    demo_dir = state_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    sealed = demo_dir / f"{source.stem}.signed-and-sealed.pdf"

    out.step(N_("Serving the test PKI's OCSP responders, CRLs and TSA on 127.0.0.1 (certomancer)"))
    try:
        pki_server = _start_test_pki(state_dir)
    except OSError as error:
        # Another program uses the port that the test certificates name, so there is no TSA and no
        # revocation data.
        pki_server = None
        out.step(N_("The test PKI server could not start ({reason}); the seal is made at level B-B and "
                    "revocation will be reported as unknown."), reason=error.strerror or str(error))
    try:
        out.step(N_("Running the officer signature through the agent, as the officer's phone would"))
        phone = asyncio.run(run_phone_flow(config, source, demo_dir, out))
        officer_signed = phone.signed
        officer_signer = _first_signer(officer_signed)

        # B-LTA: signature timestamp, the OCSP responses of the seal and the TSA, and a document timestamp.
        seal_level = "B-LTA" if pki_server is not None else "B-B"
        out.step(N_("Sealing the signed file with the organisation key on the HSM token, at level {level}"),
                 level=seal_level)
        seal_options = pades_options_for_level(seal_level, config, PadesOptions(
            reason=translate("Organisation seal", "zh_CN"), location=translate("Example City Tax Bureau", "zh_CN")))
        seal = _sign(config, "seal", officer_signed, sealed, seal_options)
        out.path(sealed)
        _archive_sealed(state_dir, config, sealed, phone)
        out.step(N_("Recorded the sealed file and an audit entry in the archive"))

        out.step(N_("Verifying the result with the verification service on 127.0.0.1"))
        base_url, verification = asyncio.run(_verify_over_http(state_dir, sealed))
    finally:
        if pki_server is not None:
            pki_server.stop()
    report_path = demo_dir / "verification-report.json"
    report_path.write_text(json.dumps(verification, ensure_ascii=False, indent=2), encoding="utf-8")
    out.path(report_path)
    out.step(N_("The service ran at {url} and has stopped."), url=base_url)

    _print_summary(out, verification, [officer_signer, seal.signer], sealed)
    if args.json:
        print(json.dumps(verification, ensure_ascii=False, indent=2))
    return 0 if verification.get("verdict") == "TOTAL_PASSED" else 1


def _yes_no(value: Any, language: str) -> str:
    if value is None:
        return translate("unknown", language)
    return translate("yes", language) if value else translate("no", language)


def _print_summary(out: _Printer, verification: dict[str, Any], signers: list[str], signed: Path) -> None:
    print()
    for language in ("zh_CN", "en"):
        print(translate("Summary", language))
        for signature in verification.get("signatures", []):
            print("  " + translate(
                "{field}: signer {signer}; level {level}; intact {intact}, valid {valid}, trusted {trusted}; "
                "coverage {coverage}",
                language, field=signature.get("field"), signer=signature.get("signer"),
                level=signature.get("level") or "-",
                intact=_yes_no(signature.get("intact"), language),
                valid=_yes_no(signature.get("valid"), language),
                trusted=_yes_no(signature.get("trusted"), language),
                coverage=signature.get("coverage")))
        print("  " + translate("Verdict: {verdict}", language, verdict=verification.get("verdict")))
        print("  " + translate("Signed file: {path}", language, path=str(signed)))
        print()
