"""The signing step of a request: open the signer's key with the PIN, check it against the policy, sign.

The workflow exports the original from the archive to a work file and signs it to a second work file;
only a finished signature is stored in the archive. The workflow removes both work files whatever
happens, so a failed or interrupted signature leaves nothing in the store or on the request.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509 as crypto_x509

from policies import Policy, Template, check_algorithm, check_certificate, require
from qsign.config import Config, TokenProfile
from signing.appearance import DEFAULT_SEAL_IMAGE, VisibleSignature
from signing.cades import async_sign_detached
from signing.levels import cades_settings_for_level, pades_options_for_level
from signing.pades import PadesOptions, async_sign_pdf
from signing.pkcs11_signer import TokenSigner, load_chain, select_digest
from signing.result import SignResult
from token_drivers.keys import TokenKey, open_key
from token_drivers.module import load_module

__all__ = ["SignInputs", "open_signer_key", "check_key_policy", "sign_document"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignInputs:
    source: Path
    output: Path
    template: Template
    profile: TokenProfile


async def open_signer_key(profile: TokenProfile, pin: str, allow_final_try: bool) -> TokenKey:
    """Open the profile's key with ``pin`` in the module's worker thread (PIN flags checked first)."""
    module = load_module(profile.module)
    return await module.run(open_key, profile.module, pin=pin, token_label=profile.token_label,
                            key_label=profile.key_label, allow_final_try=allow_final_try)


def _load_pem_certificates(paths: list[Path]) -> list[crypto_x509.Certificate]:
    certificates: list[crypto_x509.Certificate] = []
    for path in paths:
        certificates.extend(crypto_x509.load_pem_x509_certificates(Path(path).read_bytes()))
    return certificates


def check_key_policy(policy: Policy, config: Config, key: TokenKey, now: datetime.datetime, **ids: object) -> None:
    """Apply the algorithm and certificate policy to the opened key; raise ``policy_denied``."""
    digest = select_digest(key)
    require(check_algorithm(policy.algorithms, key.key_type, key.bits, key.curve, digest), **ids)
    certificate = crypto_x509.load_der_x509_certificate(key.certificate.dump())
    anchors = _load_pem_certificates(config.trust_anchors)
    intermediates = _load_pem_certificates(config.intermediates)
    require(check_certificate(policy.certificates, certificate, anchors, intermediates, now), **ids)


def _pades_options(template: Template, policy_dir: Path) -> PadesOptions:
    visible = None
    if template.seal is not None:
        image = DEFAULT_SEAL_IMAGE
        if template.seal.image:
            image = Path(template.seal.image)
            image = image if image.is_absolute() else policy_dir / image
        extra_lines = tuple(template.seal.text.splitlines()) if template.seal.text else ()
        visible = VisibleSignature(page=template.seal.page, rect=template.seal.rect, seal_image=image,
                                   extra_lines=extra_lines)
    return PadesOptions(reason=template.reason, location=template.location, visible=visible)


async def sign_document(key: TokenKey, config: Config, inputs: SignInputs, policy_dir: Path,
                        pause_before_sign: float = 0.0, check_revocation: bool = False) -> SignResult:
    """Sign ``inputs.source`` into ``inputs.output`` with PAdES or detached CAdES, at the template's
    format and level, with the template's own TSA when it has one.

    ``check_revocation`` (the policy's ``[certificates] check_revocation``) checks the signer's
    certificate for revocation before B-B and B-T signatures too; B-LT and B-LTA always check.
    """
    template = inputs.template
    signer = TokenSigner(key, chain=load_chain(config))
    if pause_before_sign:
        await asyncio.sleep(pause_before_sign)
    if template.signature_format == "pades":
        options = pades_options_for_level(template.signature_level, config, _pades_options(template, policy_dir),
                                          tsa_table=template.tsa, check_revocation=check_revocation)
        return await async_sign_pdf(signer, inputs.source, inputs.output, options)
    settings = cades_settings_for_level(template.signature_level, config, tsa_table=template.tsa,
                                        check_revocation=check_revocation)
    return await async_sign_detached(signer, inputs.source, inputs.output, timestamper=settings.timestamper,
                                     validation_context=settings.validation_context)
