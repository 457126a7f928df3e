"""PAdES signatures on PDF files (baseline B-B), as incremental updates.

The input is copied to a temporary file next to the output, signed there in place and renamed to the
output path. pyHanko appends the update to that file and hashes the byte ranges from it, so the
document is never read into memory as a whole. An already signed PDF gets one more incremental update, which leaves
the earlier signatures valid.

B-T, B-LT and B-LTA need a TSA and revocation data: ``PadesOptions.timestamper`` and
``validation_context`` are passed to pyHanko for that; ``signing.levels`` builds them from a level
name. With a validation context the signer's certificate is checked before signing, and a revoked,
untrusted or unverifiable certificate raises ``signer_revoked``, ``signer_not_trusted`` or
``revocation_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from pyhanko.pdf_utils import generic, misc
from pyhanko.pdf_utils.crypt import AuthStatus
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign.fields import SigFieldSpec, SigSeedSubFilter
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.timestamps import TimeStamper
from pyhanko_certvalidator import ValidationContext

from signing.appearance import VisibleSignature, build_stamp_style, check_rect, resolve_page_index
from signing.errors import (PdfEncrypted, PdfMalformed, PdfPasswordIncorrect, PdfSigningNotAllowed, RectOutsidePage,
                            SigningFailed)
from signing.files import atomic_output, check_input_file, check_output_path, check_pdf_header
from signing.ltv import presign_validation_error
from signing.pkcs11_signer import TokenSigner
from signing.result import SignResult, signer_common_name

__all__ = ["PadesOptions", "sign_pdf", "async_sign_pdf", "next_field_name", "COPY_CHUNK_SIZE"]

_logger = logging.getLogger(__name__)

#: Read size for copying and hashing documents.
COPY_CHUNK_SIZE = 1024 * 1024

# pyHanko and the PDF objects it reads raise these for damaged files besides PdfError.
_MALFORMED_ERRORS = (misc.PdfError, ValueError, KeyError, IndexError, TypeError, AttributeError)


@dataclass(frozen=True)
class PadesOptions:
    """Contents of the signature dictionary, placement of the signature, and the B-T/B-LT/B-LTA inputs."""

    #: Signature field to fill or create; ``None`` picks the first free ``SignatureN``.
    field_name: str | None = None
    reason: str | None = None
    location: str | None = None
    contact_info: str | None = None
    #: ``None`` for an invisible signature.
    visible: VisibleSignature | None = None
    #: User or owner password of an encrypted PDF.
    pdf_password: bytes | None = None
    #: TSA client for a signature timestamp (PAdES B-T). The space for the signature is then
    #: estimated by pyHanko with a trial signature, which calls the TSA.
    timestamper: TimeStamper | None = None
    #: Validation context for collecting revocation data (PAdES B-LT with ``embed_validation_info``).
    validation_context: ValidationContext | None = None
    embed_validation_info: bool = False
    #: Add a document timestamp after the signature (PAdES B-LTA); needs ``timestamper``.
    use_pades_lta: bool = False


def next_field_name(existing: set[str]) -> str:
    """Return ``Signature1``, ``Signature2`` … whichever is the first not in ``existing``."""
    number = 1
    while f"Signature{number}" in existing:
        number += 1
    return f"Signature{number}"


def _field_names(writer: IncrementalPdfFileWriter) -> set[str]:
    """Return the fully qualified names of all form fields of the document."""
    names: set[str] = set()
    try:
        form = writer.root["/AcroForm"]
    except KeyError:
        return names

    pending = [(reference, "") for reference in form.get("/Fields", generic.ArrayObject())]
    seen: set[int] = set()
    while pending:
        reference, parent_name = pending.pop()
        field = reference.get_object()
        if id(field) in seen:
            continue
        seen.add(id(field))
        name = parent_name
        if "/T" in field:
            partial = str(field["/T"])
            name = f"{parent_name}.{partial}" if parent_name else partial
            names.add(name)
        for kid in field.get("/Kids", ()):
            pending.append((kid, name))
    return names


def _page_count(writer: IncrementalPdfFileWriter) -> int:
    return int(writer.root["/Pages"]["/Count"])


def _open_writer(handle: BinaryIO, path: Path, password: bytes | None) -> IncrementalPdfFileWriter:
    ids = {"path": str(path)}
    try:
        writer = IncrementalPdfFileWriter(handle, strict=False)
    except _MALFORMED_ERRORS as error:
        raise PdfMalformed(path=str(path), reason=str(error) or type(error).__name__, ids=ids) from error

    if writer.prev.encrypted:
        if password is None:
            raise PdfEncrypted(path=str(path), ids=ids)
        try:
            result = writer.encrypt(password)
        except _MALFORMED_ERRORS as error:
            raise PdfMalformed(path=str(path), reason=str(error) or type(error).__name__, ids=ids) from error
        if result.status == AuthStatus.FAILED:
            raise PdfPasswordIncorrect(path=str(path), ids=ids)
    return writer


def _media_box(writer: IncrementalPdfFileWriter, page_index: int) -> tuple[float, float, float, float]:
    """Return the page's /MediaBox, which a page may inherit from its ancestors in the page tree."""
    node = writer.find_page_for_modification(page_index)[0].get_object()
    while "/MediaBox" not in node:
        node = node["/Parent"]
    x1, y1, x2, y2 = (float(value) for value in node["/MediaBox"])
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _field_spec(writer: IncrementalPdfFileWriter, field_name: str, visible: VisibleSignature | None) -> SigFieldSpec:
    if visible is None:
        return SigFieldSpec(sig_field_name=field_name)

    check_rect(visible.rect)
    page_index = resolve_page_index(visible.page, _page_count(writer))
    box = _media_box(writer, page_index)
    x1, y1, x2, y2 = visible.rect
    if x1 < box[0] or y1 < box[1] or x2 > box[2] or y2 > box[3]:
        raise RectOutsidePage(rect=",".join(f"{value:g}" for value in visible.rect), page=visible.page,
                              box=",".join(f"{value:g}" for value in box))
    return SigFieldSpec(sig_field_name=field_name, on_page=page_index, box=visible.rect)


async def async_sign_pdf(signer: TokenSigner, input_path: Path, output_path: Path,
                         options: PadesOptions = PadesOptions()) -> SignResult:
    """Sign the PDF at ``input_path`` with a PAdES signature and write it to ``output_path``.

    Raises ``signing.errors`` input errors (``input_not_file``, ``input_empty``, ``not_a_pdf``,
    ``pdf_malformed``, ``pdf_encrypted`` …) before anything is signed, token errors from the key, and
    ``SigningFailed`` for other pyHanko errors. On any error no output file exists afterwards (an
    existing file at ``output_path`` is left as it was).
    """
    input_path, output_path = Path(input_path), Path(output_path)
    check_input_file(input_path)
    check_pdf_header(input_path)
    check_output_path(output_path, input_path)

    stamp_style = build_stamp_style(options.visible) if options.visible is not None else None

    with atomic_output(output_path) as handle:
        with input_path.open("rb") as source:
            shutil.copyfileobj(source, handle, COPY_CHUNK_SIZE)
        handle.seek(0)

        writer = _open_writer(handle, input_path, options.pdf_password)
        try:
            field_name = options.field_name or next_field_name(_field_names(writer))
            field_spec = _field_spec(writer, field_name, options.visible)
        except (KeyError, ValueError, TypeError) as error:
            raise PdfMalformed(path=str(input_path), reason=str(error) or type(error).__name__,
                               ids={"path": str(input_path)}) from error

        metadata = PdfSignatureMetadata(
            field_name=field_name,
            md_algorithm=signer.digest_algorithm,
            subfilter=SigSeedSubFilter.PADES,
            reason=options.reason,
            location=options.location,
            contact_info=options.contact_info,
            validation_context=options.validation_context,
            embed_validation_info=options.embed_validation_info,
            use_pades_lta=options.use_pades_lta,
        )
        pdf_signer = PdfSigner(metadata, signer, timestamper=options.timestamper,
                               stamp_style=stamp_style, new_field_spec=field_spec)
        signing_time = await _sign_in_place(pdf_signer, signer, writer, input_path,
                                            timestamped=options.timestamper is not None)

    size = output_path.stat().st_size
    _logger.info("signed %s -> %s (field %s, key %s, %s)", input_path, output_path, field_name,
                 signer.key.key_label, signer.mechanism_name)
    return SignResult(output=output_path, format="pades", field_name=field_name, signing_time=signing_time,
                      digest_algorithm=signer.digest_algorithm, mechanism=signer.mechanism_name,
                      signer=signer_common_name(signer.signing_cert), size=size)


def _level_name(signature_meta: PdfSignatureMetadata, timestamped: bool) -> str:
    """Return the level a signature with these settings gets, for error messages."""
    if signature_meta.use_pades_lta:
        return "B-LTA"
    if signature_meta.embed_validation_info:
        return "B-LT"
    return "B-T" if timestamped else "B-B"


async def _sign_in_place(pdf_signer: PdfSigner, signer: TokenSigner, writer: IncrementalPdfFileWriter,
                         input_path: Path, timestamped: bool) -> datetime:
    """Run pyHanko's signing steps on ``writer``'s stream and return the signing time in /M."""
    ids = {"path": str(input_path)}
    try:
        session = pdf_signer.init_signing_session(writer)
    except SigningError as error:
        raise PdfSigningNotAllowed(path=str(input_path), reason=str(error), ids=ids) from error
    except _MALFORMED_ERRORS as error:
        raise PdfMalformed(path=str(input_path), reason=str(error) or type(error).__name__, ids=ids) from error

    try:
        validation_info = await session.perform_presign_validation(writer)
    except SigningError as error:
        mapped = presign_validation_error(error, signer_common_name(signer.signing_cert),
                                          _level_name(pdf_signer.signature_meta, timestamped))
        raise (mapped or SigningFailed(path=str(input_path), reason=str(error), ids=ids)) from error

    try:
        if timestamped:
            bytes_reserved = await session.estimate_signature_container_size(validation_info)
        else:
            bytes_reserved = signer.bytes_reserved()
        tbs_document = session.prepare_tbs_document(
            validation_info=validation_info,
            bytes_reserved=bytes_reserved,
            appearance_text_params={"signer_cn": signer_common_name(signer.signing_cert)},
        )
        prepared, output = tbs_document.digest_tbs_document(in_place=True, chunk_size=COPY_CHUNK_SIZE)
        post_signing = await tbs_document.perform_signature(
            document_digest=prepared.document_digest,
            pdf_cms_signed_attrs=PdfCMSSignedAttributes(
                signing_time=session.system_time,
                adobe_revinfo_attr=None if validation_info is None else validation_info.adobe_revinfo_attr,
            ),
        )
        await post_signing.post_signature_processing(output, chunk_size=COPY_CHUNK_SIZE)
    except SigningError as error:
        raise SigningFailed(path=str(input_path), reason=str(error), ids=ids) from error
    except misc.PdfError as error:
        raise PdfMalformed(path=str(input_path), reason=str(error) or type(error).__name__, ids=ids) from error

    return session.system_time


def sign_pdf(signer: TokenSigner, input_path: Path, output_path: Path,
             options: PadesOptions = PadesOptions()) -> SignResult:
    """Run ``async_sign_pdf`` in a new event loop; not callable from inside a running loop."""
    return asyncio.run(async_sign_pdf(signer, input_path, output_path, options))
