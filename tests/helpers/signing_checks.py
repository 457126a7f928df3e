"""Helpers for the signing tests: keys of the session's SoftHSM tokens and PDF signature validation."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from asn1crypto import pem, x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import copy_into_new_writer
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.status import PdfSignatureStatus
from pyhanko_certvalidator import ValidationContext

from qsign.config import Config, apply_environment, load_config
from signing.pkcs11_signer import TokenSigner, load_chain
from token_drivers.keys import TokenKey, open_profile_key


def state_config(state_dir: Path) -> Config:
    """Load the state dir's config and point SoftHSM2 at its tokens (before the module is loaded)."""
    config = load_config(state_dir)
    apply_environment(config)
    return config


def open_profile(state_dir: Path, profile: str) -> TokenKey:
    """Open the key of ``[tokens.<profile>]`` with the PIN from the profile's pin file."""
    return open_profile_key(state_config(state_dir), profile)


def make_signer(state_dir: Path, key: TokenKey, **options: object) -> TokenSigner:
    return TokenSigner(key, chain=load_chain(state_config(state_dir)), **options)


def read_certificates(path: Path) -> list[x509.Certificate]:
    return [x509.Certificate.load(der) for _, _, der in pem.unarmor(path.read_bytes(), multiple=True)]


def validate_pdf(path: Path, state_dir: Path, password: bytes | None = None) -> list[PdfSignatureStatus]:
    """Validate every signature of the PDF against the state dir's root CA; return the statuses in file order."""
    roots = read_certificates(state_dir / "pki" / "root-ca.pem")
    intermediates = read_certificates(state_dir / "pki" / "intermediate-ca.pem")

    async def validate_all() -> list[PdfSignatureStatus]:
        with path.open("rb") as handle:
            reader = PdfFileReader(handle)
            if password is not None:
                reader.decrypt(password)
            statuses = []
            for signature in reader.embedded_signatures:
                context = ValidationContext(trust_roots=roots, other_certs=intermediates)
                statuses.append(await async_validate_pdf_signature(signature, context))
            return statuses

    return asyncio.run(validate_all())


def signature_field_names(path: Path) -> list[str]:
    with path.open("rb") as handle:
        return [signature.field_name for signature in PdfFileReader(handle).embedded_signatures]


def make_encrypted_pdf(source: Path, target: Path, user_password: bytes, owner_password: bytes) -> None:
    """Write a copy of ``source`` encrypted with AES-256 (PDF 2.0 standard security handler)."""
    writer = copy_into_new_writer(PdfFileReader(io.BytesIO(source.read_bytes())))
    writer.encrypt(owner_password, user_password)
    buffer = io.BytesIO()
    writer.write(buffer)
    target.write_bytes(buffer.getvalue())
